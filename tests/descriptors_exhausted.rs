//! A listener in a process with no file descriptor left: new clients are closed at once (not
//! left in the backlog), a warning says so at most every 10 s, and clients are accepted again
//! as soon as descriptors free up. Alone in this test binary, because it lowers the process's
//! own `RLIMIT_NOFILE`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use replicant::accept::{Acceptor, PROXY_CLIENTS};

/// Whether a new client is closed at once: end of stream or reset, not a timeout.
fn closed_at_once(port: u16) -> bool {
    // Client and server share the one free descriptor: while the server juggles its spare
    // one, the client may find none for a moment.
    let mut tries = 0;
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            connected => break connected.expect("the kernel queues it"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = stream.write_all(b"hello\n");
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// What the code under test logged.
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Log;

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn out_of_descriptors_clients_are_closed_at_once_and_accepted_again_later() {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(|| Log)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    // The server side: echo one line to every client it accepts, forever.
    let server = std::thread::spawn(move || {
        runtime.block_on(async move {
            let mut acceptor = Acceptor::new(listener, "test", &PROXY_CLIENTS);
            loop {
                let (mut stream, _, admitted) = acceptor.accept().await;
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _admitted = admitted;
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        })
    });

    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    first.write_all(b"one\n").unwrap();
    let mut buf = [0u8; 4];
    first.read_exact(&mut buf).unwrap();

    // Use up every descriptor this process may open, then some are given back below.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 256.min(soft), hard).unwrap();
    let mut hogs = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        hogs.push(file);
    }
    // One descriptor free, for the test's own client socket (client and server share this
    // process): the server then has none for the client it accepts.
    hogs.pop();
    for _ in 0..3 {
        assert!(
            closed_at_once(port),
            "with no descriptor left, a client was not closed at once"
        );
    }
    let log = String::from_utf8(LOG.lock().unwrap().clone()).unwrap();
    assert_eq!(
        log.matches("refusing new clients").count(),
        1,
        "three refusals, one line (at most one every 10 s):\n{log}"
    );
    assert!(log.contains("why=\"no file descriptor is left\""), "{log}");
    first.write_all(b"two\n").unwrap();
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"two\n", "the open client carries on");

    drop(hogs);
    let mut later = TcpStream::connect(("127.0.0.1", port)).unwrap();
    later
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    later.write_all(b"back\n").unwrap();
    let mut back = [0u8; 5];
    later.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"back\n", "accepted again once descriptors are free");
    drop(server);
}
