//! A Redis server's RDB snapshot, read over the replication protocol as a replica would
//! (`SYNC`, as `redis-cli --rdb` does): no agent and no file on the server's host is needed,
//! and a replica serves it as well as the primary. Blocking I/O with a timeout on every read.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use super::Credentials;

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    #[error("{address}: {during}: {source}")]
    Io {
        address: String,
        during: &'static str,
        source: std::io::Error,
    },
    #[error("{address}: {during}: {reply}")]
    Refused {
        address: String,
        during: &'static str,
        reply: String,
    },
}

/// The RDB file as the server sends it: exactly its announced length, or an error.
pub struct RdbStream {
    reader: BufReader<TcpStream>,
    remaining: u64,
}

impl Read for RdbStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = out
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.reader.read(&mut out[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the server closed the connection {} bytes before the snapshot's end",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Ask the server at `address` for its RDB snapshot: the stream, and its length. `timeout`
/// bounds the connection and every read (the server sends newlines while it writes the
/// snapshot, so a long save does not run into it).
pub fn open(
    address: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<(RdbStream, u64), RdbError> {
    let io = |during: &'static str| {
        let address = address.to_string();
        move |source| RdbError::Io {
            address,
            during,
            source,
        }
    };
    let target = address
        .to_socket_addrs()
        .map_err(io("resolve"))?
        .next()
        .ok_or_else(|| RdbError::Refused {
            address: address.to_string(),
            during: "resolve",
            reply: "no address".into(),
        })?;
    let stream = TcpStream::connect_timeout(&target, timeout).map_err(io("connect"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io("connect"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(io("connect"))?;
    let mut writer = stream.try_clone().map_err(io("connect"))?;
    let mut reader = BufReader::new(stream);
    if let Some(password) = &credentials.password {
        let mut parts = vec!["AUTH"];
        if let Some(user) = &credentials.username {
            parts.push(user);
        }
        parts.push(password.expose());
        writer
            .write_all(&command(&parts))
            .map_err(io("authenticate"))?;
        let reply = line(&mut reader).map_err(io("authenticate"))?;
        if reply != "+OK" {
            // The reply names the failure, never the password.
            return Err(RdbError::Refused {
                address: address.to_string(),
                during: "authenticate",
                reply,
            });
        }
    }
    writer.write_all(&command(&["SYNC"])).map_err(io("SYNC"))?;
    // Newlines keep the link alive while the server writes the snapshot.
    let header = loop {
        let reply = line(&mut reader).map_err(io("SYNC"))?;
        if !reply.is_empty() {
            break reply;
        }
    };
    let length = header
        .strip_prefix('$')
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| RdbError::Refused {
            address: address.to_string(),
            during: "SYNC",
            reply: crate::bounded::clip(&header, 256).into_owned(),
        })?;
    Ok((
        RdbStream {
            reader,
            remaining: length,
        },
        length,
    ))
}

/// A command as RESP.
fn command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply line without its line end; at most 64 KiB.
fn line(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    let n = reader
        .by_ref()
        .take(64 << 10)
        .read_until(b'\n', &mut bytes)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}
