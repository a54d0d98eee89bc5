//! Value parsers and defaults shared by the sidecar's flag groups
//! (`config` and `auth`'s signing settings).

use std::time::Duration;

use clap::{Args, FromArgMatches};

/// A whole number of seconds, at least `min`.
pub(crate) fn seconds_from(min: u64) -> impl clap::builder::TypedValueParser<Value = Duration> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(u64)
        .range(min..)
        .map(Duration::from_secs)
}

/// A whole number of seconds from `min` to `max`.
pub(crate) fn seconds_in(
    min: u64,
    max: u64,
) -> impl clap::builder::TypedValueParser<Value = Duration> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(u64)
        .range(min..=max)
        .map(Duration::from_secs)
}

/// A count from `min` to `max`.
pub(crate) fn count(min: u64, max: u64) -> impl clap::builder::TypedValueParser<Value = usize> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(u64)
        .range(min..=max)
        .map(|n| n as usize)
}

/// A group of flags at its defaults, as the clap attributes give them
/// (environment variables ignored).
pub(crate) fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(None));
    match command
        .try_get_matches_from(["defaults"])
        .and_then(|m| T::from_arg_matches(&m))
    {
        Ok(t) => t,
        Err(e) => panic!("the defaults of the sidecar's flags do not parse: {e}"),
    }
}
