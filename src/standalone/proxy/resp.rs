//! RESP framing for the multiplexing proxy: where each request or reply ends, and what a request
//! asks for. Pure: bytes in, offsets and verdicts out; no I/O.

/// Finds where one RESP value (RESP2 or RESP3) ends. Resumable: when a value is not complete
/// yet, the elements already read are remembered and the next call (with the same buffer, grown)
/// carries on from the first incomplete element instead of starting over.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Offset of the first element not yet read.
    pos: usize,
    /// Elements still owed by each open aggregate, innermost last.
    owed: Vec<u64>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed RESP at byte {at}: {reason}")]
pub struct Malformed {
    pub at: usize,
    pub reason: &'static str,
}

impl Scanner {
    /// The length of the value at the start of `buf`, or `None` when more bytes are needed.
    /// After `Some`, the scanner is ready for the value that follows (at offset 0 of whatever
    /// buffer the caller passes next).
    pub fn value(&mut self, buf: &[u8]) -> Result<Option<usize>, Malformed> {
        loop {
            let start = self.pos;
            let malformed = |reason| Malformed { at: start, reason };
            let Some(&kind) = buf.get(start) else {
                return Ok(None);
            };
            let line_end = match find_crlf(buf, start + 1) {
                Ok(end) => end,
                Err(Line::Incomplete) if buf.len() - start > MAX_LINE => {
                    return Err(malformed("header line too long"));
                }
                Err(Line::Incomplete) => return Ok(None),
                Err(Line::BareNewline) => return Err(malformed("line not ended by CRLF")),
            };
            let line = &buf[start + 1..line_end];
            let mut next = line_end + 2;
            let children = match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => 0,
                b'$' | b'!' | b'=' => {
                    let len = parse_int(line).ok_or_else(|| malformed("bad length"))?;
                    if len >= 0 {
                        let end = next
                            .checked_add(len as usize + 2)
                            .ok_or_else(|| malformed("length out of range"))?;
                        if buf.len() < end {
                            return Ok(None);
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return Err(malformed("bulk string not followed by CRLF"));
                        }
                        next = end;
                    }
                    0
                }
                b'*' | b'~' | b'>' => parse_int(line)
                    .ok_or_else(|| malformed("bad element count"))?
                    .max(0) as u64,
                // A map holds key/value pairs; an attribute's pairs precede the value they annotate.
                b'%' => pairs(line).ok_or_else(|| malformed("bad pair count"))?,
                b'|' => pairs(line).ok_or_else(|| malformed("bad pair count"))? + 1,
                _ => return Err(malformed("unknown type byte")),
            };
            self.pos = next;
            if children > 0 {
                if self.owed.len() >= MAX_DEPTH {
                    return Err(malformed("aggregates nested too deeply"));
                }
                self.owed.push(children);
                continue;
            }
            // One element is complete: settle the aggregates it completes.
            loop {
                match self.owed.last_mut() {
                    None => {
                        let end = self.pos;
                        self.pos = 0;
                        return Ok(Some(end));
                    }
                    Some(owed) => {
                        *owed -= 1;
                        if *owed > 0 {
                            break;
                        }
                        self.owed.pop();
                    }
                }
            }
        }
    }
}

fn pairs(line: &[u8]) -> Option<u64> {
    (parse_int(line)?.max(0) as u64).checked_mul(2)
}

/// Longest header line accepted (the server's own limit for inline requests).
const MAX_LINE: usize = 64 * 1024;
const MAX_DEPTH: usize = 1024;

enum Line {
    Incomplete,
    BareNewline,
}

/// Offset of the CRLF ending the line that continues at `from`. Header lines are a few bytes,
/// so a plain loop beats a vectorised search here.
fn find_crlf(buf: &[u8], from: usize) -> Result<usize, Line> {
    let rest = buf.get(from..).ok_or(Line::Incomplete)?;
    for (i, &byte) in rest.iter().enumerate() {
        match byte {
            b'\r' => {
                return match rest.get(i + 1) {
                    Some(b'\n') => Ok(from + i),
                    Some(_) => Err(Line::BareNewline),
                    None => Err(Line::Incomplete),
                };
            }
            b'\n' => return Err(Line::BareNewline),
            _ => {}
        }
    }
    Err(Line::Incomplete)
}

fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(d - b'0');
    }
    Some(if negative { -value } else { value })
}

/// What the proxy does with one client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Stateless: may share a pipelined server connection with other clients.
    Shared,
    /// Uses or changes connection state, blocks, or is not understood: from here on the client
    /// gets a server connection of its own.
    Pinned,
    /// Would give a wrong answer on any connection but the one the client's writes went
    /// through; answered with this error instead.
    Refused(&'static str),
}

pub const WAIT_REFUSED: &str = "-ERR WAIT and WAITAOF cannot be answered through a multiplexing proxy (the writes went over a shared connection); use a passthrough virtual name\r\n";

/// How to route the complete request `request` (one value, as found by [`Scanner`]).
pub fn routing(request: &[u8]) -> Routing {
    match command_name(request) {
        Some(name) => classify(name),
        None => Routing::Pinned,
    }
}

/// The first argument of a multi-bulk request, if it is one with at least one argument.
fn command_name(request: &[u8]) -> Option<&[u8]> {
    if request.first() != Some(&b'*') {
        return None; // inline command
    }
    let header_end = find_crlf(request, 1).ok()?;
    if parse_int(&request[1..header_end])? < 1 {
        return None; // empty requests get no reply; let the server handle them
    }
    let bulk = header_end + 2;
    if request.get(bulk) != Some(&b'$') {
        return None;
    }
    let bulk_end = find_crlf(request, bulk + 1).ok()?;
    let len = usize::try_from(parse_int(&request[bulk + 1..bulk_end])?).ok()?;
    request.get(bulk_end + 2..bulk_end + 2 + len)
}

fn classify(name: &[u8]) -> Routing {
    // Every name of interest fits in 16 bytes: compared as one integer, not byte by byte.
    let Some(key) = pack(name) else {
        return Routing::Pinned;
    };
    const WAIT: Option<u128> = pack(b"WAIT");
    const WAITAOF: Option<u128> = pack(b"WAITAOF");
    if Some(key) == WAIT || Some(key) == WAITAOF {
        return Routing::Refused(WAIT_REFUSED);
    }
    static KEYS: std::sync::OnceLock<Vec<u128>> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| SHAREABLE.iter().filter_map(|c| pack(c)).collect());
    if keys.binary_search(&key).is_ok() {
        Routing::Shared
    } else {
        Routing::Pinned
    }
}

/// A command name of at most 16 bytes, upper-cased, as a big-endian integer (so the order of
/// keys is the byte order of names).
const fn pack(name: &[u8]) -> Option<u128> {
    if name.len() > 16 {
        return None;
    }
    let (mut key, mut i) = (0u128, 0);
    while i < 16 {
        let byte = if i < name.len() {
            name[i].to_ascii_uppercase()
        } else {
            0
        };
        key = key << 8 | byte as u128;
        i += 1;
    }
    Some(key)
}

/// Commands that neither read nor change connection state and never block the connection:
/// data commands on the default database, scripts (whose SELECT does not leak to the caller)
/// and a few server queries. Anything else pins the client. Sorted for binary search.
const SHAREABLE: &[&[u8]] = &[
    b"APPEND",
    b"BITCOUNT",
    b"BITFIELD",
    b"BITFIELD_RO",
    b"BITOP",
    b"BITPOS",
    b"COPY",
    b"DBSIZE",
    b"DECR",
    b"DECRBY",
    b"DEL",
    b"DUMP",
    b"ECHO",
    b"EVAL",
    b"EVALSHA",
    b"EVALSHA_RO",
    b"EVAL_RO",
    b"EXISTS",
    b"EXPIRE",
    b"EXPIREAT",
    b"EXPIRETIME",
    b"FCALL",
    b"FCALL_RO",
    b"GEOADD",
    b"GEODIST",
    b"GEOHASH",
    b"GEOPOS",
    b"GEOSEARCH",
    b"GEOSEARCHSTORE",
    b"GET",
    b"GETBIT",
    b"GETDEL",
    b"GETEX",
    b"GETRANGE",
    b"GETSET",
    b"HDEL",
    b"HEXISTS",
    b"HGET",
    b"HGETALL",
    b"HINCRBY",
    b"HINCRBYFLOAT",
    b"HKEYS",
    b"HLEN",
    b"HMGET",
    b"HMSET",
    b"HRANDFIELD",
    b"HSCAN",
    b"HSET",
    b"HSETNX",
    b"HSTRLEN",
    b"HVALS",
    b"INCR",
    b"INCRBY",
    b"INCRBYFLOAT",
    b"LCS",
    b"LINDEX",
    b"LINSERT",
    b"LLEN",
    b"LMOVE",
    b"LMPOP",
    b"LPOP",
    b"LPOS",
    b"LPUSH",
    b"LPUSHX",
    b"LRANGE",
    b"LREM",
    b"LSET",
    b"LTRIM",
    b"MGET",
    b"MSET",
    b"MSETNX",
    b"PERSIST",
    b"PEXPIRE",
    b"PEXPIREAT",
    b"PEXPIRETIME",
    b"PFADD",
    b"PFCOUNT",
    b"PFMERGE",
    b"PING",
    b"PSETEX",
    b"PTTL",
    b"PUBLISH",
    b"RENAME",
    b"RENAMENX",
    b"RESTORE",
    b"RPOP",
    b"RPOPLPUSH",
    b"RPUSH",
    b"RPUSHX",
    b"SADD",
    b"SCAN",
    b"SCARD",
    b"SDIFF",
    b"SDIFFSTORE",
    b"SET",
    b"SETBIT",
    b"SETEX",
    b"SETNX",
    b"SETRANGE",
    b"SINTER",
    b"SINTERCARD",
    b"SINTERSTORE",
    b"SISMEMBER",
    b"SMEMBERS",
    b"SMISMEMBER",
    b"SMOVE",
    b"SORT",
    b"SORT_RO",
    b"SPOP",
    b"SRANDMEMBER",
    b"SREM",
    b"SSCAN",
    b"STRLEN",
    b"SUBSTR",
    b"SUNION",
    b"SUNIONSTORE",
    b"TIME",
    b"TOUCH",
    b"TTL",
    b"TYPE",
    b"UNLINK",
    b"XACK",
    b"XADD",
    b"XAUTOCLAIM",
    b"XCLAIM",
    b"XDEL",
    b"XLEN",
    b"XPENDING",
    b"XRANGE",
    b"XREVRANGE",
    b"XTRIM",
    b"ZADD",
    b"ZCARD",
    b"ZCOUNT",
    b"ZDIFF",
    b"ZDIFFSTORE",
    b"ZINCRBY",
    b"ZINTER",
    b"ZINTERCARD",
    b"ZINTERSTORE",
    b"ZLEXCOUNT",
    b"ZMPOP",
    b"ZMSCORE",
    b"ZPOPMAX",
    b"ZPOPMIN",
    b"ZRANDMEMBER",
    b"ZRANGE",
    b"ZRANGEBYLEX",
    b"ZRANGEBYSCORE",
    b"ZRANGESTORE",
    b"ZRANK",
    b"ZREM",
    b"ZREMRANGEBYLEX",
    b"ZREMRANGEBYRANK",
    b"ZREMRANGEBYSCORE",
    b"ZREVRANGE",
    b"ZREVRANGEBYLEX",
    b"ZREVRANGEBYSCORE",
    b"ZREVRANK",
    b"ZSCAN",
    b"ZSCORE",
    b"ZUNION",
    b"ZUNIONSTORE",
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn scan_all(buf: &[u8]) -> Result<Vec<usize>, Malformed> {
        let mut scanner = Scanner::default();
        let mut ends = Vec::new();
        let mut offset = 0;
        while offset < buf.len() {
            match scanner.value(&buf[offset..])? {
                Some(len) => {
                    offset += len;
                    ends.push(offset);
                }
                None => break,
            }
        }
        Ok(ends)
    }

    #[test]
    fn finds_the_end_of_each_kind_of_value() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"+OK\r\n", Some(5)),
            (b"-ERR wrong\r\n", Some(12)),
            (b":42\r\n", Some(5)),
            (b"$3\r\nfoo\r\n", Some(9)),
            (b"$-1\r\n", Some(5)),
            (b"$0\r\n\r\n", Some(6)),
            (b"*-1\r\n", Some(5)),
            (b"*0\r\n", Some(4)),
            (b"*2\r\n$1\r\na\r\n:1\r\n", Some(15)),
            (b"*2\r\n*1\r\n+x\r\n$-1\r\n", Some(17)),
            (b"%1\r\n+k\r\n+v\r\n", Some(12)),
            (b"|1\r\n+k\r\n+v\r\n:7\r\n", Some(16)),
            (b"_\r\n", Some(3)),
            (b",3.5\r\n", Some(6)),
            (b"#t\r\n", Some(4)),
            (b"=7\r\ntxt:abc\r\n", Some(13)),
            (b"$4\r\na\r\nb\r\n+OK\r\n", Some(10)),
            (b"$3\r\nfo", None),
            (b"*2\r\n$1\r\na\r\n", None),
            (b"+OK\r", None),
            (b"", None),
        ];
        for (input, expected) in cases {
            let got = Scanner::default().value(input);
            assert_eq!(got, Ok(*expected), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn rejects_what_is_not_resp() {
        for input in [
            &b"?what\r\n"[..],
            b"$abc\r\nxyz\r\n",
            b"$3\r\nfoobar\r\n",
            b"*x\r\n",
            b"+OK\n",
            b"*1\r\n$1\n",
        ] {
            assert!(
                Scanner::default().value(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn routes_by_command_name_whatever_its_case() {
        let request = |args: &[&str]| {
            let mut out = format!("*{}\r\n", args.len());
            for a in args {
                out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            out.into_bytes()
        };
        let cases: &[(&[&str], Routing)] = &[
            (&["GET", "k"], Routing::Shared),
            (&["set", "k", "v"], Routing::Shared),
            (&["Ping"], Routing::Shared),
            (&["SELECT", "1"], Routing::Pinned),
            (&["MULTI"], Routing::Pinned),
            (&["BLPOP", "q", "0"], Routing::Pinned),
            (&["SUBSCRIBE", "c"], Routing::Pinned),
            (&["AUTH", "secret"], Routing::Pinned),
            (&["HELLO", "3"], Routing::Pinned),
            (&["CLIENT", "SETNAME", "x"], Routing::Pinned),
            (
                &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
                Routing::Pinned,
            ),
            (&["NOSUCHCOMMAND"], Routing::Pinned),
            (&["A-VERY-LONG-COMMAND-NAME-INDEED"], Routing::Pinned),
            (&["GETX"], Routing::Pinned),
            (&["GE"], Routing::Pinned),
            (&["zremrangebyscore", "z", "0", "1"], Routing::Shared),
            (&["wait", "1", "0"], Routing::Refused(WAIT_REFUSED)),
            (&["WAITAOF", "1", "1", "0"], Routing::Refused(WAIT_REFUSED)),
        ];
        for (args, expected) in cases {
            assert_eq!(routing(&request(args)), *expected, "{args:?}");
        }
        assert_eq!(routing(b"PING\r\n"), Routing::Pinned, "inline commands");
        assert_eq!(routing(b"*0\r\n"), Routing::Pinned, "empty request");
        assert_eq!(routing(b"*1\r\n:1\r\n"), Routing::Pinned, "not a bulk name");
    }

    #[test]
    fn the_shareable_list_is_sorted_upper_case_and_packable() {
        assert!(SHAREABLE.windows(2).all(|w| w[0] < w[1]));
        assert!(
            SHAREABLE.iter().all(
                |c| pack(c).is_some() && c.iter().all(|b| b.is_ascii_uppercase() || *b == b'_')
            )
        );
        let keys: Vec<u128> = SHAREABLE.iter().filter_map(|c| pack(c)).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "packing keeps the order"
        );
    }

    /// Any RESP value, serialised.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            "[a-zA-Z ]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            "[a-zA-Z ]{0,12}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
            any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
                let mut out = format!("${}\r\n", b.len()).into_bytes();
                out.extend(b);
                out.extend(b"\r\n");
                out
            }),
            Just(b"$-1\r\n".to_vec()),
            Just(b"_\r\n".to_vec()),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(|items| {
                    let mut out = format!("*{}\r\n", items.len()).into_bytes();
                    items.into_iter().for_each(|i| out.extend(i));
                    out
                }),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(|pairs| {
                    let mut out = format!("%{}\r\n", pairs.len()).into_bytes();
                    for (k, v) in pairs {
                        out.extend(k);
                        out.extend(v);
                    }
                    out
                }),
            ]
        })
    }

    proptest! {
        /// However the bytes arrive, the scanner finds exactly the boundaries between values.
        #[test]
        fn boundaries_survive_any_split(
            values in proptest::collection::vec(value(), 1..8),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for v in &values {
                stream.extend(v);
                expected.push(stream.len());
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort();
            // Feed the stream in pieces, as reads would deliver it.
            let mut scanner = Scanner::default();
            let (mut start, mut found) = (0, Vec::new());
            for cut in cuts {
                while let Some(len) = scanner.value(&stream[start..cut]).unwrap() {
                    start += len;
                    found.push(start);
                }
            }
            prop_assert_eq!(&found, &expected);
            prop_assert_eq!(scan_all(&stream).unwrap(), expected);
        }
    }
}
