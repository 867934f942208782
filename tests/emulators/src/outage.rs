//! A TCP switch in front of a service, to stage an outage: [`Switch::cut`]
//! refuses new connections and drops the open ones mid-request, as a crashed
//! or unreachable service would; [`Switch::restore`] listens again on the same
//! port. The service behind keeps its data, as the real one would: DynamoDB
//! Local, stopped and started again, can lose a write it had acknowledged
//! just before the stop, which is not an outage real DynamoDB has.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Result;

/// A running switch.
pub struct Switch {
    /// `http://127.0.0.1:<port>`: where clients connect.
    pub endpoint: String,
    addr: SocketAddr,
    upstream: SocketAddr,
    /// `true` while connections are forwarded.
    up: watch::Sender<bool>,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Switch {
    /// Starts forwarding a free port on 127.0.0.1 to `upstream`
    /// (`http://host:port`, as emulators' endpoints are written).
    pub async fn start(upstream: &str) -> Result<Self> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()?;
        let listener = listen("127.0.0.1:0".parse()?)?;
        let addr = listener.local_addr()?;
        let (up, _) = watch::channel(true);
        let switch = Self {
            endpoint: format!("http://{addr}"),
            addr,
            upstream,
            up,
            accepting: Mutex::new(None),
        };
        switch.accept(listener);
        Ok(switch)
    }

    /// Cuts the line: the port refuses connections and every open connection
    /// is closed, whatever it was doing.
    pub fn cut(&self) {
        if let Some(task) = self.lock().take() {
            task.abort();
        }
        self.up.send_replace(false);
    }

    /// Listens again on the same port and forwards new connections.
    pub async fn restore(&self) -> Result<()> {
        let accepting = self.lock().take();
        if let Some(task) = accepting {
            task.abort();
            // The aborted task drops its listener when it is next polled.
            let _ = task.await;
        }
        self.up.send_replace(true);
        self.accept(listen(self.addr)?);
        Ok(())
    }

    fn accept(&self, listener: TcpListener) {
        let (upstream, up) = (self.upstream, self.up.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, up.subscribe()));
            }
        });
        *self.lock() = Some(task);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.accepting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A listener on `addr` that may take over a port whose earlier connections
/// are still in TIME_WAIT.
fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(1024)?)
}

/// Copies both ways until either side closes or the line is cut.
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}
