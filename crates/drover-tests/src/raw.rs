//! A raw TCP client, for what a well-behaved HTTP client never does: stop
//! half-way through a request, stop reading an answer, hold a connection
//! open doing nothing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    stream: TcpStream,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
        }
    }

    /// A connection from `local` (another loopback address, say: a caller
    /// on another machine as the hub sees it).
    pub async fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        Raw {
            stream: socket.connect(addr).await.unwrap(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads until the end of the response head (or the connection closes)
    /// and returns it; panics after `within`.
    pub async fn read_head(&mut self, within: Duration) -> String {
        let mut head = Vec::new();
        let read = async {
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match self.stream.read(&mut byte).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => head.push(byte[0]),
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .expect("no answer in time");
        String::from_utf8_lossy(&head).into_owned()
    }
}

impl Raw {
    /// Reads a chunked body to its last chunk and returns its chunks as
    /// they were framed on the wire; panics after `within`.
    pub async fn read_chunks(&mut self, within: Duration) -> Vec<Vec<u8>> {
        let read = async {
            let mut buf = Vec::new();
            let mut chunks = Vec::new();
            loop {
                // Parse what is whole so far.
                let mut at = 0;
                while let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                    let size_line = std::str::from_utf8(&buf[at..at + eol]).unwrap();
                    let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
                    let start = at + eol + 2;
                    if buf.len() < start + size + 2 {
                        break;
                    }
                    if size == 0 {
                        return chunks;
                    }
                    chunks.push(buf[start..start + size].to_vec());
                    at = start + size + 2;
                }
                buf.drain(..at);
                let mut more = [0u8; 65536];
                match self.stream.read(&mut more).await {
                    Ok(0) | Err(_) => return chunks,
                    Ok(n) => buf.extend_from_slice(&more[..n]),
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .expect("no whole body in time")
    }
}

/// The head of a POST with a JSON body of `length` bytes, which the caller
/// sends (or not).
pub fn post_head(path: &str, length: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    .into_bytes()
}
