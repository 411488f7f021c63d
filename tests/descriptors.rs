//! `replicant run` under descriptor pressure, with a low `RLIMIT_NOFILE` set on the child: the
//! proxies and the admin endpoint refuse clients past their budgets, closing them at once and
//! logging it rarely; open connections carry on, the controller keeps its cluster, and both
//! accept again once places free up. (A listener out of descriptors altogether is tested in
//! `tests/descriptors_exhausted.rs`, in a process of its own.)

mod support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    time::Duration,
};

use support::*;

/// The limit set on the child: small enough to reach, big enough to run.
const LIMIT: u64 = 400;

/// Send a PING on `stream`; whether `+PONG` came back.
fn ping(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(stream.read(&mut reply), Ok(7)) && &reply == b"+PONG\r\n"
}

fn client(port: u16) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    ping(&mut stream).then_some(stream)
}

/// Whether a new client to `port` is refused the right way: closed at once (end of stream or
/// reset), not left waiting until it gives up.
fn closed_at_once(port: u16, request: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.write_all(request);
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// One `GET /healthz` on a kept-alive HTTP/1.1 connection; whether `ok` came back.
fn healthz(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 512];
    while !response.ends_with(b"ok\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    response.starts_with(b"HTTP/1.1 200")
}

fn admin_client(port: u16) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    healthz(&mut stream).then_some(stream)
}

/// The budget the controller logged at start-up.
fn logged_budget(log: &str) -> usize {
    let line = log
        .lines()
        .find(|l| l.contains("proxies admit up to"))
        .unwrap_or_else(|| panic!("no budget logged:\n{log}"));
    let field = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("client_connections="))
        .unwrap_or_else(|| panic!("no client_connections in {line}"));
    assert!(line.contains(&format!("limit={LIMIT}")), "{line}");
    field.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_beyond_the_descriptors_are_refused_and_the_rest_carry_on() {
    let bed = Bed::new(2);
    bed.write_spec("orders.yaml", &bed.spec("a", &[], "    detectAfter: 1s"));
    let admin = replicant_testkit::free_port().unwrap();
    let log = bed.dir.path().join("controller.log");
    let state = bed.state();
    let ctl = Controller::spawn_configured(
        &[
            "run",
            "--specs",
            bed.specs().to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
        &["--admin", &format!("127.0.0.1:{admin}")],
        &[],
        log,
        |command| unsafe {
            command.pre_exec(|| {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    LIMIT,
                    LIMIT,
                )
                .map_err(std::io::Error::from)
            });
        },
    );
    bed.wait_for("ready", &ctl, 30, ready).await;
    let budget = logged_budget(&ctl.log_text());
    assert!((20..200).contains(&budget), "budget {budget}");

    // The proxies' budget: exactly that many clients get through, the others are closed at once.
    let mut clients: Vec<TcpStream> = (0..budget)
        .map(|i| client(bed.rw_port).unwrap_or_else(|| panic!("client {i} of {budget} refused")))
        .collect();
    for _ in 0..20 {
        assert!(
            closed_at_once(bed.rw_port, b"PING\r\n"),
            "a client past the budget was not closed at once"
        );
    }
    assert!(clients.iter_mut().all(ping), "open clients must carry on");
    let log = ctl.log_text();
    let refusals = log.matches("refusing new clients").count();
    assert!(
        (1..=2).contains(&refusals),
        "20 refusals logged {refusals} times:\n{log}"
    );
    assert!(log.contains("the proxies' connection budget"), "{log}");

    // Freed places are taken again.
    clients.truncate(budget - 5);
    eventually("a new client to get through", 10, async || {
        match client(bed.rw_port) {
            Some(c) => {
                clients.push(c);
                true
            }
            None => false,
        }
    })
    .await;

    // The admin endpoint has a small budget of its own, so scrapes cannot use up what the
    // controller's probes need.
    let mut admins: Vec<TcpStream> = (0..64)
        .map(|i| admin_client(admin).unwrap_or_else(|| panic!("admin client {i} refused")))
        .collect();
    for _ in 0..5 {
        assert!(
            closed_at_once(admin, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"),
            "an admin client past its budget was not closed at once"
        );
    }
    assert!(
        admins.iter_mut().all(healthz),
        "open admin clients must carry on"
    );
    assert!(
        clients.iter_mut().all(ping),
        "open proxy clients must carry on"
    );
    eventually("the refusal to be logged", 5, async || {
        ctl.log_text()
            .contains("the admin endpoint's connection budget")
    })
    .await;

    // Descriptors back: accepted again, and the cluster never failed over.
    admins.clear();
    eventually("the admin endpoint to accept again", 10, async || {
        admin_client(admin).is_some()
    })
    .await;
    let report = bed.report().unwrap();
    assert_eq!(report.status.current_primary.as_deref(), Some("a"));
    assert_eq!(report.status.epoch, 0);
    assert!(ready(&report), "{report:?}");
    assert!(!ctl.log_text().contains("panicked"));
}
