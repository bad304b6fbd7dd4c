//! What the dead-letter copy of a message holds: pure rules, no I/O.
//!
//! The copy must always fit the producer's message size limit, or the send
//! fails, the worker restarts, reads the same message again, and loops
//! forever (a poison pill). So the copy is cut to [`MAX_COPY_BYTES`]: the
//! producer's headers beyond [`MAX_PRODUCER_HEADER_BYTES`] are dropped, then
//! the payload is truncated, and headers say so. The producer's headers can
//! never pass for Tollgate's own: any `tollgate.*` header it sent is
//! renamed `producer.tollgate.*`.

use std::borrow::Cow;

/// Everything in a dead-letter record (key, payload, producer headers) stays
/// under this; Tollgate's own headers (source, error) fit in the rest of
/// librdkafka's default `message.max.bytes` (1,000,000).
pub const MAX_COPY_BYTES: usize = 900_000;
/// The producer's headers kept, at most, in bytes (names and values).
pub const MAX_PRODUCER_HEADER_BYTES: usize = 64 << 10;
/// The key kept, at most, in bytes.
pub const MAX_KEY_BYTES: usize = 16 << 10;
/// Header set when the payload was cut: its value is the original length.
pub const TRUNCATED_HEADER: &str = "tollgate.payload.truncated_from";
/// Header set when producer headers were dropped: how many.
pub const HEADERS_DROPPED_HEADER: &str = "tollgate.headers.dropped";
/// Prefix given to a producer's header that claims to be Tollgate's.
pub const RENAMED_PREFIX: &str = "producer.";

/// The parts of a dead-letter record built from one bad message.
#[derive(Debug, PartialEq)]
pub struct Copy<'a> {
    pub payload: &'a [u8],
    pub key: Option<&'a [u8]>,
    /// The producer's headers kept, `tollgate.*` ones renamed.
    pub headers: Vec<(Cow<'a, str>, &'a [u8])>,
    /// The payload's original length, when it was cut.
    pub truncated_from: Option<usize>,
    /// Producer headers left out to stay under the limit.
    pub headers_dropped: usize,
}

impl<'a> Copy<'a> {
    pub fn new(
        payload: &'a [u8],
        key: Option<&'a [u8]>,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Self {
        let key = key.map(|k| &k[..k.len().min(MAX_KEY_BYTES)]);
        let mut kept = Vec::new();
        let mut header_bytes = 0usize;
        let mut headers_dropped = 0usize;
        for (name, value) in headers {
            let name: Cow<'a, str> = if is_ours(name) {
                Cow::Owned(format!("{RENAMED_PREFIX}{name}"))
            } else {
                Cow::Borrowed(name)
            };
            let size = name.len() + value.len();
            if header_bytes + size > MAX_PRODUCER_HEADER_BYTES {
                headers_dropped += 1;
                continue;
            }
            header_bytes += size;
            kept.push((name, value));
        }
        let room = MAX_COPY_BYTES - header_bytes - key.map_or(0, <[u8]>::len);
        let (payload, truncated_from) = if payload.len() > room {
            (&payload[..room], Some(payload.len()))
        } else {
            (payload, None)
        };
        Copy {
            payload,
            key,
            headers: kept,
            truncated_from,
            headers_dropped,
        }
    }

    /// Bytes of the copy counted against [`MAX_COPY_BYTES`].
    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.key.map_or(0, <[u8]>::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// Header names Tollgate writes itself (case-insensitive: brokers and
/// clients differ on header case).
fn is_ours(name: &str) -> bool {
    name.len() >= 9 && name.as_bytes()[..9].eq_ignore_ascii_case(b"tollgate.")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn small_copies_are_whole_and_forged_headers_renamed() {
        let headers = [
            ("trace", b"abc".as_slice()),
            ("tollgate.error", b"forged".as_slice()),
            ("TOLLGATE.source.offset", b"0".as_slice()),
        ];
        let c = Copy::new(b"{bad", Some(b"k"), headers.into_iter());
        assert_eq!(c.payload, b"{bad");
        assert_eq!(c.truncated_from, None);
        let names: Vec<&str> = c.headers.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(
            names,
            [
                "trace",
                "producer.tollgate.error",
                "producer.TOLLGATE.source.offset"
            ]
        );
    }

    #[test]
    fn a_copy_never_exceeds_the_limit() {
        let payload = vec![b'x'; 2_000_000];
        let key = vec![b'k'; 100_000];
        let value = vec![b'v'; 40_000];
        let headers: Vec<(&str, &[u8])> = (0..5).map(|_| ("h", value.as_slice())).collect();
        let c = Copy::new(&payload, Some(&key), headers.into_iter());
        assert!(c.size() <= MAX_COPY_BYTES, "{}", c.size());
        assert_eq!(c.truncated_from, Some(2_000_000));
        assert_eq!(c.key.unwrap().len(), MAX_KEY_BYTES);
        assert_eq!((c.headers.len(), c.headers_dropped), (1, 4));
        // Just under the limit: kept whole.
        let fits = vec![b'x'; MAX_COPY_BYTES];
        let c = Copy::new(&fits, None, std::iter::empty());
        assert_eq!((c.payload.len(), c.truncated_from), (MAX_COPY_BYTES, None));
    }
}
