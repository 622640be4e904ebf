//! A plain broadcast WebSocket server, the way a team would write one with tokio-tungstenite:
//! every message the publisher (a connection to `/pub`) sends is relayed to every other client
//! through a `tokio::sync::broadcast` channel. A client that falls more than `CAPACITY` messages
//! behind loses the messages it missed (`Lagged`) and carries on.
//!
//! Usage: `tokio-broadcast [ADDR]` (default `127.0.0.1:9200`).

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Messages a client may fall behind before it loses some.
const CAPACITY: usize = 4096;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9200".into());
    let listener = TcpListener::bind(&addr).await?;
    println!(
        "tokio-broadcast listening on ws://{}/",
        listener.local_addr()?
    );
    let (tx, _) = broadcast::channel::<Bytes>(CAPACITY);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(client(tcp, tx.clone()));
    }
}

// The callback's error type is tungstenite's HTTP response, as its API wants it.
#[allow(clippy::result_large_err)]
async fn client(tcp: TcpStream, tx: broadcast::Sender<Bytes>) {
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    if path == "/pub" {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Binary(data) = msg {
                let _ = tx.send(data);
            }
        }
        return;
    }
    let mut rx = tx.subscribe();
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok(data) => if sink.send(Message::Binary(data)).await.is_err() { return },
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
