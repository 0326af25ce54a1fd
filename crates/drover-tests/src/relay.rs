//! A TCP relay to PostgreSQL that tests cut, stall and restore: a database
//! that goes away, or hangs, under running hubs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The PostgreSQL the tests use, as host:port and the rest of its URL.
pub fn postgres() -> (String, String) {
    let url = std::env::var("DROVER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let (scheme_user, rest) = url.split_once('@').unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    (addr.to_string(), format!("{scheme_user}@{{relay}}/{path}"))
}

/// A TCP relay to PostgreSQL that can be cut (every connection closed, new
/// ones refused), stalled (every connection closed, new ones taken and
/// never answered, as a database that hangs) and restored.
pub struct Relay {
    pub addr: String,
    up: Arc<AtomicBool>,
    /// Replaced at every cut: the connections relayed until then end.
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    /// Connections taken while stalled, held open until restored.
    held: Arc<std::sync::Mutex<Option<Vec<TcpStream>>>>,
}

impl Relay {
    pub async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let held = Arc::new(std::sync::Mutex::new(None::<Vec<TcpStream>>));
        let (up2, cut2, held2) = (up.clone(), cut.clone(), held.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    if let Some(held) = held2.lock().unwrap().as_mut() {
                        held.push(client);
                    }
                    continue;
                }
                let token = cut2.lock().unwrap().clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        Relay {
            addr,
            up,
            cut,
            held,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut token = self.cut.lock().unwrap();
        token.cancel();
        *token = CancellationToken::new();
    }

    pub fn stall(&self) {
        *self.held.lock().unwrap() = Some(Vec::new());
        self.cut();
    }

    pub fn restore(&self) {
        self.held.lock().unwrap().take();
        self.up.store(true, Ordering::SeqCst);
    }
}
