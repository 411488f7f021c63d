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
            if !b"+-:_,#($!=*~>%|".contains(&kind) {
                return Err(malformed("unknown type byte"));
            }
            // A line that is not complete yet is fine, unless it is already too long.
            let incomplete = |what| {
                if buf.len() - start > MAX_LINE {
                    Err(malformed("header line too long"))
                } else {
                    Ok(what)
                }
            };
            let (children, next) = match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => match find_crlf(buf, start + 1) {
                    Ok(end) => (0, end + 2),
                    Err(Line::Incomplete) => return incomplete(None),
                    Err(Line::Malformed) => return Err(malformed("line not ended by CRLF")),
                },
                _ => {
                    let (number, next) = match header_int(buf, start + 1) {
                        Ok(header) => header,
                        Err(Line::Incomplete) => return incomplete(None),
                        Err(Line::Malformed) => return Err(malformed("bad length or count")),
                    };
                    let count = number.max(0) as u64;
                    match kind {
                        b'$' | b'!' | b'=' if number < 0 => (0, next),
                        b'$' | b'!' | b'=' => {
                            let end = next
                                .checked_add(number as usize + 2)
                                .ok_or_else(|| malformed("length out of range"))?;
                            if buf.len() < end {
                                return Ok(None);
                            }
                            if &buf[end - 2..end] != b"\r\n" {
                                return Err(malformed("bulk string not followed by CRLF"));
                            }
                            (0, end)
                        }
                        b'*' | b'~' | b'>' => (count, next),
                        // A map holds key/value pairs; an attribute's pairs precede the value
                        // they annotate.
                        b'%' => (count * 2, next),
                        b'|' => (count * 2 + 1, next),
                        _ => return Err(malformed("unknown type byte")),
                    }
                }
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

/// Requests beyond the server's own limits (arguments per request, `proto-max-bulk-len`) would
/// make it drop the connection, and a shared one is everybody's: such a request goes to the
/// server on a connection of the client's own instead.
const MAX_ARGS: i64 = 1024 * 1024;
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// Longest header line accepted (the server's own limit for inline requests).
const MAX_LINE: usize = 64 * 1024;
const MAX_DEPTH: usize = 1024;

enum Line {
    Incomplete,
    Malformed,
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
                    Some(_) => Err(Line::Malformed),
                    None => Err(Line::Incomplete),
                };
            }
            b'\n' => return Err(Line::Malformed),
            _ => {}
        }
    }
    Err(Line::Incomplete)
}

/// What the proxy does with one client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Stateless: may share a pipelined server connection with other clients.
    Shared,
    /// Uses or changes connection state, blocks, or is not understood: from here on the client
    /// gets a server connection of its own.
    Pinned,
    /// Answered by the proxy with this reply, in its turn: `WAIT` (which would give a wrong
    /// answer on any connection but the one the client's writes went through) is refused; the
    /// connect-time courtesies `CLIENT SETINFO` and `SELECT 0` change nothing a shared client
    /// could observe, so they are acknowledged.
    Answer(&'static str),
    /// `HELLO 2` or `HELLO 3` (no AUTH, no SETNAME): the client speaks this protocol version
    /// from now on, over a shared connection that speaks it too.
    Hello(u8),
    /// `AUTH [user] password`, or `HELLO 2|3 AUTH user password`: the server checks the
    /// credentials on a connection of their own; if it accepts them, the client's commands go
    /// over shared connections authenticated with exactly these credentials.
    Authenticate,
}

pub const WAIT_REFUSED: &str = "-ERR WAIT and WAITAOF cannot be answered through a multiplexing proxy (the writes went over a shared connection); use a passthrough virtual name\r\n";
const OK: &str = "+OK\r\n";

/// One client request, as far as the proxy needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A complete request of `len` bytes at the start of the buffer.
    Complete { len: usize, routing: Routing },
    /// More bytes are needed.
    Incomplete,
    /// Not an array of bulk strings with at least one element (an inline command, an empty
    /// request, or garbage): the server should see it as sent and answer it itself.
    NotUnderstood,
}

/// Finds where each client request ends and which command it names. Clients send arrays of
/// bulk strings, so this is a narrower, faster walk than [`Scanner`]; like it, it resumes where
/// it stopped when a request arrives in pieces.
#[derive(Debug, Default)]
pub struct RequestScanner {
    /// Offset of the first argument not yet read.
    pos: usize,
    /// Arguments not yet read; `None` before the array header.
    args_left: Option<u64>,
    /// All arguments, the command name included.
    args: u64,
    /// Where the command name (the first argument) and the second argument lie.
    name: Option<(usize, usize)>,
    second: Option<(usize, usize)>,
}

impl RequestScanner {
    /// The request at the start of `buf`. After `Complete`, the scanner is ready for the next
    /// request (at offset 0 of whatever buffer the caller passes next).
    pub fn next(&mut self, buf: &[u8]) -> Request {
        let args_left = match self.args_left {
            Some(left) => left,
            None => {
                match buf.first() {
                    None => return Request::Incomplete,
                    Some(b'*') => {}
                    Some(_) => return Request::NotUnderstood,
                }
                match header_int(buf, 1) {
                    Ok((count, next)) if (1..=MAX_ARGS).contains(&count) => {
                        self.pos = next;
                        count as u64
                    }
                    Err(Line::Incomplete) if buf.len() <= MAX_LINE => return Request::Incomplete,
                    _ => return Request::NotUnderstood,
                }
            }
        };
        if self.args_left.is_none() {
            self.args = args_left;
        }
        self.args_left = Some(args_left);
        while self.args_left > Some(0) {
            let at = self.pos;
            match buf.get(at) {
                None => return Request::Incomplete,
                Some(b'$') => {}
                Some(_) => return Request::NotUnderstood,
            }
            let (len, data) = match header_int(buf, at + 1) {
                Ok((len, data)) if (0..=MAX_BULK).contains(&len) => (len as usize, data),
                Err(Line::Incomplete) if buf.len() - at <= MAX_LINE => return Request::Incomplete,
                _ => return Request::NotUnderstood,
            };
            let Some(end) = data.checked_add(len).and_then(|e| e.checked_add(2)) else {
                return Request::NotUnderstood;
            };
            if buf.len() < end {
                return Request::Incomplete;
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Request::NotUnderstood;
            }
            match self.name {
                None => self.name = Some((data, data + len)),
                Some(_) if self.second.is_none() => self.second = Some((data, data + len)),
                Some(_) => {}
            }
            self.pos = end;
            self.args_left = self.args_left.map(|n| n - 1);
        }
        let slice = |range: Option<(usize, usize)>| range.map(|(from, to)| &buf[from..to]);
        let routing = classify(
            slice(self.name).unwrap_or_default(),
            slice(self.second),
            self.args,
        );
        let len = self.pos;
        *self = Self::default();
        Request::Complete { len, routing }
    }
}

/// Who a client authenticated as: what it sent, kept only to open shared connections as the
/// same user. Never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub username: Option<Vec<u8>>,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(redacted)")
    }
}

/// What an `Authenticate` request asks for: the credentials, and for `HELLO` the protocol
/// version. `request` is one complete request that [`RequestScanner`] routed `Authenticate`.
pub fn authentication(request: &[u8]) -> Option<(Credentials, Option<u8>)> {
    let args = arguments(request)?;
    let is = |i: usize, word: &[u8]| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(word));
    match args.len() {
        2 if is(0, b"AUTH") => Some((
            Credentials {
                username: None,
                password: args[1].to_vec(),
            },
            None,
        )),
        3 if is(0, b"AUTH") => Some((
            Credentials {
                username: Some(args[1].to_vec()),
                password: args[2].to_vec(),
            },
            None,
        )),
        5 if is(0, b"HELLO") && is(2, b"AUTH") => {
            let version = match args[1] {
                b"2" => 2,
                b"3" => 3,
                _ => return None,
            };
            Some((
                Credentials {
                    username: Some(args[3].to_vec()),
                    password: args[4].to_vec(),
                },
                Some(version),
            ))
        }
        _ => None,
    }
}

/// The arguments of one complete array-of-bulk-strings request.
fn arguments(request: &[u8]) -> Option<Vec<&[u8]>> {
    let (count, mut at) = header_int(request, 1).ok()?;
    let mut args = Vec::new();
    for _ in 0..count {
        let (len, data) = header_int(request, at + 1).ok()?;
        let end = data + usize::try_from(len).ok()?;
        args.push(request.get(data..end)?);
        at = end + 2;
    }
    Some(args)
}

/// A request to authenticate with `credentials`, speaking RESP `protocol`.
pub fn authenticate_request(credentials: &Credentials, protocol: u8) -> Vec<u8> {
    let mut args: Vec<&[u8]> = Vec::new();
    if protocol == 3 {
        args.extend([&b"HELLO"[..], b"3", b"AUTH"]);
        args.push(credentials.username.as_deref().unwrap_or(b"default"));
    } else {
        args.push(b"AUTH");
        args.extend(credentials.username.as_deref());
    }
    args.push(&credentials.password);
    encode(&args)
}

/// A request as an array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).bytes());
        out.extend(*a);
        out.extend(b"\r\n");
    }
    out
}

/// The integer of a header line starting at `from` (after its type byte), and the offset just
/// past its CRLF: one pass instead of finding the line and then parsing it.
fn header_int(buf: &[u8], from: usize) -> Result<(i64, usize), Line> {
    let mut i = from;
    let negative = buf.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let (mut value, digits_from) = (0i64, i);
    loop {
        match buf.get(i) {
            None => return Err(Line::Incomplete),
            Some(d @ b'0'..=b'9') if i - digits_from < 18 => {
                value = value * 10 + i64::from(d - b'0');
            }
            Some(b'\r') if i > digits_from => {
                return match buf.get(i + 1) {
                    None => Err(Line::Incomplete),
                    Some(b'\n') => Ok((if negative { -value } else { value }, i + 2)),
                    Some(_) => Err(Line::Malformed),
                };
            }
            Some(_) => return Err(Line::Malformed),
        }
        i += 1;
    }
}

/// How to route a request with command `name`, second argument `second` and `args` arguments.
fn classify(name: &[u8], second: Option<&[u8]>, args: u64) -> Routing {
    // Every name of interest fits in 16 bytes: compared as one integer, not byte by byte.
    let Some(key) = pack(name) else {
        return Routing::Pinned;
    };
    const WAIT: Option<u128> = pack(b"WAIT");
    const WAITAOF: Option<u128> = pack(b"WAITAOF");
    const CLIENT: Option<u128> = pack(b"CLIENT");
    const SELECT: Option<u128> = pack(b"SELECT");
    const HELLO: Option<u128> = pack(b"HELLO");
    const AUTH: Option<u128> = pack(b"AUTH");
    let second_is = |word: &[u8]| second.is_some_and(|s| s.eq_ignore_ascii_case(word));
    match Some(key) {
        k if k == WAIT || k == WAITAOF => return Routing::Answer(WAIT_REFUSED),
        k if k == CLIENT && args == 4 && second_is(b"SETINFO") => return Routing::Answer(OK),
        k if k == SELECT && args == 2 && second_is(b"0") => return Routing::Answer(OK),
        // HELLO alone reports the protocol in use and changes nothing.
        k if k == HELLO && args == 1 => return Routing::Shared,
        k if k == HELLO && args == 2 && second_is(b"2") => return Routing::Hello(2),
        k if k == HELLO && args == 2 && second_is(b"3") => return Routing::Hello(3),
        k if k == HELLO && args == 5 && (second_is(b"2") || second_is(b"3")) => {
            return Routing::Authenticate;
        }
        k if k == AUTH && (args == 2 || args == 3) => return Routing::Authenticate,
        _ => {}
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

    fn request(args: &[&str]) -> Vec<u8> {
        encode(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
    }

    /// How the proxy routes the complete request at the start of `request`.
    fn routing(request: &[u8]) -> Routing {
        match RequestScanner::default().next(request) {
            Request::Complete { routing, .. } => routing,
            Request::Incomplete | Request::NotUnderstood => Routing::Pinned,
        }
    }

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
            b"?",
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
        let cases: &[(&[&str], Routing)] = &[
            (&["GET", "k"], Routing::Shared),
            (&["set", "k", "v"], Routing::Shared),
            (&["Ping"], Routing::Shared),
            (&["SELECT", "1"], Routing::Pinned),
            (&["MULTI"], Routing::Pinned),
            (&["BLPOP", "q", "0"], Routing::Pinned),
            (&["SUBSCRIBE", "c"], Routing::Pinned),
            (&["AUTH", "secret"], Routing::Authenticate),
            (&["auth", "user", "secret"], Routing::Authenticate),
            (&["AUTH", "a", "b", "c"], Routing::Pinned),
            (
                &["HELLO", "3", "AUTH", "user", "secret"],
                Routing::Authenticate,
            ),
            (&["HELLO"], Routing::Shared),
            (&["hello", "3"], Routing::Hello(3)),
            (&["HELLO", "2"], Routing::Hello(2)),
            (&["HELLO", "3", "SETNAME", "n"], Routing::Pinned),
            (&["HELLO", "4"], Routing::Pinned),
            (&["CLIENT", "SETNAME", "x"], Routing::Pinned),
            (
                &["client", "setinfo", "LIB-NAME", "redis-rs"],
                Routing::Answer(OK),
            ),
            (&["CLIENT", "SETINFO", "LIB-VER"], Routing::Pinned),
            (&["CLIENT", "ID"], Routing::Pinned),
            (&["SELECT", "0"], Routing::Answer(OK)),
            (&["SELECT", "00"], Routing::Pinned),
            (
                &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
                Routing::Pinned,
            ),
            (&["NOSUCHCOMMAND"], Routing::Pinned),
            (&["A-VERY-LONG-COMMAND-NAME-INDEED"], Routing::Pinned),
            (&["GETX"], Routing::Pinned),
            (&["GE"], Routing::Pinned),
            (&["zremrangebyscore", "z", "0", "1"], Routing::Shared),
            (&["wait", "1", "0"], Routing::Answer(WAIT_REFUSED)),
            (&["WAITAOF", "1", "1", "0"], Routing::Answer(WAIT_REFUSED)),
        ];
        for (args, expected) in cases {
            assert_eq!(routing(&request(args)), *expected, "{args:?}");
        }
        assert_eq!(routing(b"PING\r\n"), Routing::Pinned, "inline commands");
        assert_eq!(routing(b"*0\r\n"), Routing::Pinned, "empty request");
        assert_eq!(routing(b"*1\r\n:1\r\n"), Routing::Pinned, "not a bulk name");
        for garbage in [
            &b"PING\r\n"[..],
            b"*0\r\n",
            b"*-1\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$2\r\nabc\r\n",
            b"*2000000\r\n",
            b"*2\r\n$3\r\nSET\r\n$600000000\r\n",
        ] {
            assert_eq!(
                RequestScanner::default().next(garbage),
                Request::NotUnderstood,
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        assert_eq!(
            RequestScanner::default().next(b"*2\r\n$3\r\nGET"),
            Request::Incomplete
        );
    }

    #[test]
    fn authentication_requests_yield_their_credentials_and_protocol() {
        let credentials = |user: Option<&str>, password: &str| Credentials {
            username: user.map(|u| u.as_bytes().to_vec()),
            password: password.as_bytes().to_vec(),
        };
        assert_eq!(
            authentication(&request(&["AUTH", "p w"])),
            Some((credentials(None, "p w"), None))
        );
        assert_eq!(
            authentication(&request(&["auth", "app", "pw"])),
            Some((credentials(Some("app"), "pw"), None))
        );
        assert_eq!(
            authentication(&request(&["HELLO", "3", "auth", "app", "pw"])),
            Some((credentials(Some("app"), "pw"), Some(3)))
        );
        assert_eq!(
            authentication(&request(&["HELLO", "4", "AUTH", "a", "b"])),
            None
        );
        // What the proxy sends to open a shared connection as that user.
        assert_eq!(
            authenticate_request(&credentials(None, "pw"), 2),
            request(&["AUTH", "pw"])
        );
        assert_eq!(
            authenticate_request(&credentials(None, "pw"), 3),
            request(&["HELLO", "3", "AUTH", "default", "pw"])
        );
        assert_eq!(
            format!("{:?}", credentials(Some("app"), "hunter2")),
            "Credentials(redacted)"
        );
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

    /// A client request: a command name and binary arguments, as an array of bulk strings.
    fn any_request() -> impl Strategy<Value = (Vec<u8>, Routing)> {
        let name = prop_oneof![
            Just(("GET", Routing::Shared)),
            Just(("set", Routing::Shared)),
            Just(("MULTI", Routing::Pinned)),
            Just(("Wait", Routing::Answer(WAIT_REFUSED))),
        ];
        let args = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..5);
        (name, args).prop_map(|((name, routing), args)| {
            let mut out =
                format!("*{}\r\n${}\r\n{name}\r\n", args.len() + 1, name.len()).into_bytes();
            for a in args {
                out.extend(format!("${}\r\n", a.len()).bytes());
                out.extend(a);
                out.extend(b"\r\n");
            }
            (out, routing)
        })
    }

    proptest! {
        /// However a pipeline of requests arrives, each is found whole and routed by its name.
        #[test]
        fn requests_survive_any_split(
            requests in proptest::collection::vec(any_request(), 1..8),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let stream: Vec<u8> = requests.iter().flat_map(|(r, _)| r.clone()).collect();
            let expected: Vec<(usize, Routing)> =
                requests.iter().map(|(r, routing)| (r.len(), *routing)).collect();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort();
            let mut scanner = RequestScanner::default();
            let (mut start, mut found) = (0, Vec::new());
            for cut in cuts {
                loop {
                    match scanner.next(&stream[start..cut]) {
                        Request::Complete { len, routing } => {
                            start += len;
                            found.push((len, routing));
                        }
                        Request::Incomplete => break,
                        Request::NotUnderstood => prop_assert!(false, "valid request refused"),
                    }
                }
            }
            prop_assert_eq!(found, expected);
        }

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
