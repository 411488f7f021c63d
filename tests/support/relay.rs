//! A TCP relay on loopback that a test can cut like a network partition: while cut, every
//! connection through it stays open and nothing passes either way (no reset, no close), so the
//! side that uses it sees timeouts, as behind a dropped link.

use std::sync::{Arc, Mutex};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct Relay {
    /// The port to connect to instead of the target's.
    pub port: u16,
    cut: watch::Sender<bool>,
    /// Connections caught by the cut, held open and unread until the relay heals or drops.
    held: Arc<Mutex<Vec<TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relay 127.0.0.1:`port` to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watching) = watch::channel(false);
        let held = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(listener, target, watching, held.clone()));
        Self {
            port,
            cut,
            held,
            task,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// From now on nothing passes, on open connections and new ones alike.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Traffic passes again. The connections caught by the cut are closed, as they would time
    /// out after a long partition; new ones are relayed.
    pub fn heal(&self) {
        self.held.lock().unwrap().clear();
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    target: String,
    cut: watch::Receiver<bool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut client, _)) = listener.accept().await {
        if *cut.borrow() {
            held.lock().unwrap().push(client);
            continue;
        }
        let (target, mut cut, held) = (target.clone(), cut.clone(), held.clone());
        connections.spawn(async move {
            let Ok(mut server) = TcpStream::connect(&target).await else {
                return;
            };
            // A link adds no coalescing delay of its own: without this, Nagle's algorithm
            // against delayed acknowledgements holds small replies (a standby's flush report,
            // a commit's answer) for tens of milliseconds.
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.wait_for(|cut| *cut) => {
                    held.lock().unwrap().extend([client, server]);
                }
            }
        });
    }
}
