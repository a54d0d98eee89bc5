//! Label selectors as Cloud Foundry and Kubernetes write them:
//! `env=prod,tier!=web,team in (a,b),region notin (x),canary,!legacy`
//! (`==` is accepted for `=`). Parsed into kube's selector, which matches.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt};

/// A parsed selector; every requirement must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelSelector(Selector);

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }

    /// Its requirements, in the order written: what the archive's query
    /// translates into conditions on its rows.
    pub fn requirements(&self) -> Vec<Expression> {
        self.0.clone().into_iter().collect()
    }
}

/// Splits at commas outside parentheses.
fn requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses".into()),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("unbalanced parentheses".into()),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    out.push(&text[start..]);
    Ok(out)
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters, alphanumeric at both ends.
fn key(k: &str) -> Result<String, String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!("invalid key prefix '{p}'"));
        }
    }
    if name.is_empty() || !is_value(name) {
        return Err(format!("invalid key '{k}'"));
    }
    Ok(k.to_string())
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9._-]`,
/// alphanumeric at both ends.
fn is_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    if is_value(v) {
        Ok(v.to_string())
    } else {
        Err(format!("invalid value '{v}'"))
    }
}

/// `key in (a,b)` or `key notin (a,b)`, if `req` has that form.
fn set_requirement(req: &str) -> Option<Result<Expression, String>> {
    let open = req.find('(')?;
    let (head, rest) = req.split_at(open);
    let mut words = head.split_whitespace();
    let (k, op) = (words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    Some((|| {
        let k = key(k)?;
        let values: BTreeSet<String> = inner.split(',').map(value).collect::<Result<_, _>>()?;
        match op {
            "in" => Ok(Expression::In(k, values)),
            "notin" => Ok(Expression::NotIn(k, values)),
            other => Err(format!("unknown operator '{other}'")),
        }
    })())
}

fn requirement(req: &str) -> Result<Expression, String> {
    let req = req.trim();
    if req.is_empty() {
        return Err("empty requirement".into());
    }
    if let Some(r) = set_requirement(req) {
        return r;
    }
    if let Some(k) = req.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key(k.trim())?));
    }
    if let Some((k, v)) = req.split_once("!=") {
        return Ok(Expression::NotEqual(key(k.trim())?, value(v)?));
    }
    if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(Expression::Equal(key(k.trim())?, value(v)?));
    }
    Ok(Expression::Exists(key(req)?))
}

/// Parses a selector; the error says what is wrong.
pub fn parse(text: &str) -> Result<LabelSelector, String> {
    let exprs = requirements(text)?
        .into_iter()
        .map(requirement)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LabelSelector(exprs.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_selects() {
        let l = labels(&[
            ("env", "prod"),
            ("team", "a"),
            ("cancel.dev/pipeline", "foo"),
        ]);
        for (selector, want) in [
            ("env=prod", true),
            ("env==prod", true),
            ("env=dev", false),
            ("env!=dev", true),
            ("env!=prod", false),
            ("missing!=x", true),
            ("team in (a,b)", true),
            ("team in (b, c)", false),
            ("team notin (b,c)", true),
            ("team notin (a)", false),
            ("env", true),
            ("missing", false),
            ("!missing", true),
            ("!env", false),
            ("cancel.dev/pipeline=foo", true),
            ("env=prod,team in (a,b),!legacy", true),
            ("env=prod,team=b", false),
            (" env = prod , team in ( a , b ) ", true),
        ] {
            let s = parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(s.matches(&l), want, "{selector}");
        }
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in [
            "",
            ",",
            "env=prod,",
            "env in (a,b",
            "env in a,b)",
            "env in ((a))",
            "env within (a)",
            "-env=x",
            "env=-x",
            "env=a b",
            "Bad_Prefix/env=x",
            "/env=x",
            "!",
            "env=x=y",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
