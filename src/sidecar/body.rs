//! Reading a request body: bounded in size and time, a refused one drained
//! so that the client sees the answer.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::http::{HeaderMap, header};

pub(crate) enum BodyError {
    TooLarge,
    Broken,
    TimedOut,
}

/// A refused body up to this size is read and discarded before the 413 is
/// sent, so that a client still sending sees the answer instead of a reset
/// connection; a larger one is cut off.
const DRAIN_LIMIT: usize = 1 << 20;

/// Reads and discards the rest of a refused body, bounded in size and time.
async fn drain<S, B>(body: &mut S, mut seen: usize)
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.remaining();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// Reads at most `limit` bytes within `timeout`; refuses more, reading a
/// bounded rest.
pub(crate) async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    tokio::time::timeout(timeout, read_limited(headers, body, limit))
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

async fn read_limited<S, B>(headers: &HeaderMap, body: S, limit: usize) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        if n <= DRAIN_LIMIT as u64 {
            drain(&mut body, 0).await;
        }
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| BodyError::Broken)?;
        if buf.len() + chunk.remaining() > limit {
            drain(&mut body, buf.len() + chunk.remaining()).await;
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}
