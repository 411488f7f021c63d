//! A restart of `replicant run` refuses no client: the stopped process passes its listening
//! sockets to its successor and lets its open connections finish within `--drain-grace`. Two
//! hand-overs, with clients opening a new connection every 10 ms through each virtual name
//! and the admin endpoint: one stopped by SIGTERM and then replaced by a new process, one
//! replaced by a process started beside it.

mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use redis::AsyncCommands;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a client opening a connection every 10 ms saw.
#[derive(Default)]
struct Tally {
    answered: usize,
    /// When and how each failed attempt failed.
    failed: Vec<(Duration, String)>,
}

/// Connect, ask, and wait for the answer that `exchange` expects, every 10 ms until `stop`.
fn keep_connecting(
    port: u16,
    request: &'static [u8],
    expected: &'static str,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> (Arc<Mutex<Tally>>, tokio::task::JoinHandle<()>) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let kept = tally.clone();
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let attempt = async {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                stream
                    .write_all(request)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                let mut answer = Vec::new();
                let mut buffer = [0u8; 512];
                while !String::from_utf8_lossy(&answer).contains(expected) {
                    let n = stream
                        .read(&mut buffer)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err(format!(
                            "closed after {:?}",
                            String::from_utf8_lossy(&answer)
                        ));
                    }
                    answer.extend_from_slice(&buffer[..n]);
                }
                Ok::<(), String>(())
            };
            let result = tokio::time::timeout(Duration::from_secs(5), attempt)
                .await
                .unwrap_or_else(|_| Err("no answer within 5s".into()));
            {
                let mut tally = kept.lock().unwrap();
                match result {
                    Ok(()) => tally.answered += 1,
                    Err(reason) => tally.failed.push((started.elapsed(), reason)),
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (tally, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_controller_refuses_no_client_and_drains_open_connections() {
    let bed = Bed::new(3);
    bed.write_spec("orders.yaml", &bed.spec("a", &[], "    detectAfter: 1s"));
    let admin = replicant_testkit::free_port().unwrap();
    let admin_address = format!("127.0.0.1:{admin}");
    let grace = Duration::from_secs(3);
    let args = [
        "--admin",
        admin_address.as_str(),
        "--drain-grace",
        "3s",
        "--handover-wait",
        "30s",
    ];
    let start = || Controller::start_with(&bed.specs(), &bed.state(), &[], &args);
    let mut first = start();
    bed.wait_for("ready", &first, 30, ready).await;
    let rw = format!("127.0.0.1:{}", bed.rw_port);

    // A connection open before the restart, kept across it.
    let client = redis::Client::open(format!("redis://{rw}/")).unwrap();
    let mut kept = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = kept.set("before", "1").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let ping = b"*1\r\n$4\r\nPING\r\n";
    let health = b"GET /healthz HTTP/1.0\r\n\r\n";
    let clients = [
        (
            "orders-rw",
            keep_connecting(bed.rw_port, ping, "+PONG\r\n", stop.clone(), started),
        ),
        (
            "orders-ro",
            keep_connecting(bed.ro_port, ping, "+PONG\r\n", stop.clone(), started),
        ),
        (
            "admin",
            keep_connecting(admin, health, "ok\n", stop.clone(), started),
        ),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. SIGTERM, then the new process a second later.
    first.terminate();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !first.exited(),
        "the stopped process serves on until a successor comes"
    );
    let second = start();
    let handed = Instant::now();
    eventually("the successor to take the sockets over", 20, async || {
        second
            .log_text()
            .contains("took over the listening sockets")
    })
    .await;
    // The old process still relays the connection it has, until the grace is out.
    let _: () = kept.set("during", "1").await.unwrap();
    first
        .wait_for_exit(
            grace.as_secs() + 15,
            "the replaced process ends after its drain",
        )
        .await;
    let drained = handed.elapsed();
    assert!(
        drained >= grace && drained < grace + Duration::from_secs(10),
        "the open connection held the old process for the grace, {grace:?}, not {drained:?}"
    );
    assert!(
        kept.set::<_, _, ()>("after", "1").await.is_err(),
        "the connection left open was closed when the grace ran out"
    );
    assert!(
        first
            .log_text()
            .contains("closing the proxy connections still open")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. A third process started beside the second: no signal at all.
    let mut third = start();
    eventually(
        "the third process to take the sockets over",
        20,
        async || third.log_text().contains("took over the listening sockets"),
    )
    .await;
    let mut second = second;
    // Nothing is open through the second process: it ends as soon as it stops accepting.
    second
        .wait_for_exit(15, "the second process ends once replaced")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    for (name, (tally, task)) in clients {
        task.await.unwrap();
        let tally = tally.lock().unwrap();
        assert!(
            tally.failed.is_empty(),
            "{name}: {} of {} attempts failed across the restarts (at {:?} since the clients \
             started; SIGTERM came at about 1s): {:?}\n--- first:\n{}\n--- second:\n{}\n--- third:\n{}",
            tally.failed.len(),
            tally.answered + tally.failed.len(),
            tally.failed.first().map(|f| f.0),
            &tally.failed[..tally.failed.len().min(5)],
            first.log_text(),
            second.log_text(),
            third.log_text()
        );
        assert!(
            tally.answered > 100,
            "{name}: a client every 10ms for several seconds answered {} times",
            tally.answered
        );
    }

    // The last process reconciles: it carries out a switchover, with the epoch it inherited.
    let report = bed.report().unwrap();
    assert_eq!(report.status.epoch, 0, "no failover across the restarts");
    bed.write_spec("orders.yaml", &bed.spec("b", &[], "    detectAfter: 1s"));
    bed.wait_for(
        "the switchover to b by the third process",
        &third,
        30,
        |r| r.status.current_primary.as_deref() == Some("b") && ready(r),
    )
    .await;
    assert_eq!(role(&bed.address("b")).await, "master");
    let _: () = redis::Client::open(format!("redis://{rw}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
        .set("switched", "1")
        .await
        .unwrap();
    assert_eq!(
        value(&bed.address("b"), "switched").await.as_deref(),
        Some("1")
    );
    third.kill();
}

/// Started as systemd starts a socket-activated service (`LISTEN_FDS`), the process serves
/// each name and the admin endpoint from the socket bound to its address, and a client that
/// connected before the process existed is answered, not closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_given_its_sockets_by_systemd_serves_them() {
    let Ok(activate) = which("systemd-socket-activate") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-socket-activate is missing under CI: .ci/run should have installed systemd"
        );
        eprintln!("SKIPPED: systemd-socket-activate not found (Debian package systemd)");
        return;
    };
    let bed = Bed::new(3);
    bed.write_spec("orders.yaml", &bed.spec("a", &[], "    detectAfter: 1s"));
    let admin = replicant_testkit::free_port().unwrap();
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let log = bed.dir.path().join("activated.log");
    // It listens, and execs the controller (same PID) at the first connection.
    let child = std::process::Command::new(activate)
        .args(["-l", &listen(bed.rw_port), "-l", &listen(bed.ro_port)])
        .args(["-l", &listen(admin), "-E", "RUST_LOG=info", "--"])
        .arg(env!("CARGO_BIN_EXE_replicant"))
        .args(["run", "--specs", bed.specs().to_str().unwrap()])
        .args(["--state", bed.state().to_str().unwrap()])
        .args(["--admin", &listen(admin)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let controller = Controller::adopt(child, log);
    eventually("systemd-socket-activate to listen", 10, async || {
        std::net::TcpStream::connect(listen(admin)).is_ok()
    })
    .await;
    // That connection started the controller: the first client is the one it must not drop.
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        let mut stream = tokio::net::TcpStream::connect(listen(bed.rw_port)).await?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    })
    .await;
    assert!(
        matches!(&first, Ok(Ok(answer)) if answer == b"+PONG\r\n"),
        "the first client is answered: {first:?}\n{}",
        controller.log_text()
    );
    bed.wait_for("ready", &controller, 30, ready).await;
    assert_eq!(role(&format!("127.0.0.1:{}", bed.ro_port)).await, "slave");
    let health = try_http_get(admin, "/healthz").unwrap();
    assert!(health.ends_with("ok\n"), "{health}");
    assert!(
        !controller.log_text().contains("cannot listen"),
        "every socket was taken from systemd, none bound again:\n{}",
        controller.log_text()
    );
}

/// The path of `program` on `PATH`.
fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}
