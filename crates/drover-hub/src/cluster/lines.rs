//! The link's framing: one JSON object a line, each way, over one HTTP/1.1
//! request whose body and answer both stream. A line is written as one
//! body frame (so one write), and read back whatever frames it came in.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// Longer lines end the link: no message of the link comes near it.
const MAX_LINE: usize = 1 << 20;

/// A body whose frames are the lines sent on a channel; it ends when every
/// sender is gone. Lines that queue while the connection is busy go out in
/// one frame, so one write; and a lone line waits for the other tasks to
/// run once (microseconds) in case more come, since on a busy hub they do:
/// a write costs more than a grant.
pub struct ChannelBody {
    lines: mpsc::UnboundedReceiver<Bytes>,
    /// Lines taken, held back while the other tasks run once.
    held: BytesMut,
}

impl ChannelBody {
    pub fn new(lines: mpsc::UnboundedReceiver<Bytes>) -> Self {
        ChannelBody {
            lines,
            held: BytesMut::new(),
        }
    }
}

/// The most bytes of queued lines one frame gathers.
const MOST_GATHERED: usize = 64 * 1024;

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let waited = !this.held.is_empty();
        while this.held.len() < MOST_GATHERED {
            match this.lines.poll_recv(cx) {
                Poll::Ready(Some(line)) => this.held.extend_from_slice(&line),
                Poll::Ready(None) if this.held.is_empty() => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if this.held.is_empty() {
            return Poll::Pending;
        }
        if !waited && this.held.len() < MOST_GATHERED {
            // Once: the other tasks run, then this is polled again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))))
    }
}

/// `message` as one line.
pub fn line(message: &impl Serialize) -> Bytes {
    let mut out = serde_json::to_vec(message).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// Reads messages a line at a time from a body.
pub struct Lines<B> {
    body: B,
    buf: BytesMut,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the link ended")]
    Ended,
    #[error("the link broke: {0}")]
    Broken(String),
    #[error("a line of the link is not a message: {0}")]
    Garbled(String),
    #[error("a line of the link is over 1 MiB")]
    TooLong,
}

impl<B> Lines<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    pub fn new(body: B) -> Self {
        Lines {
            body,
            buf: BytesMut::new(),
        }
    }

    /// The next message.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<T, LinkError> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buf) {
                let line = self.buf.split_to(at + 1);
                return serde_json::from_slice(&line[..at])
                    .map_err(|e| LinkError::Garbled(e.to_string()));
            }
            if self.buf.len() > MAX_LINE {
                return Err(LinkError::TooLong);
            }
            let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
            match frame {
                None => return Err(LinkError::Ended),
                Some(Err(e)) => return Err(LinkError::Broken(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn messages_come_back_whatever_frames_carried_them() {
        let whole = [line(&1u32), line(&"two"), line(&[3, 4])].concat();
        // Cut in threes: lines split across frames and frames holding two.
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = whole
            .chunks(3)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let mut lines = Lines::new(StreamBody::new(futures_util::stream::iter(frames)));
        assert_eq!(lines.next::<u32>().await.unwrap(), 1);
        assert_eq!(lines.next::<String>().await.unwrap(), "two");
        assert_eq!(lines.next::<Vec<u8>>().await.unwrap(), [3, 4]);
        assert!(matches!(lines.next::<u32>().await, Err(LinkError::Ended)));
    }

    #[tokio::test]
    async fn lines_that_queued_go_out_in_one_frame_and_read_back_one_by_one() {
        let (tx, rx) = mpsc::unbounded_channel();
        for i in 0..3u32 {
            tx.send(line(&i)).unwrap();
        }
        let mut body = ChannelBody::new(rx);
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from("0\n1\n2\n"));
        // A lone line waits one turn, and takes what came meanwhile.
        tx.send(line(&3u32)).unwrap();
        let mut first = true;
        let frame = std::future::poll_fn(|cx| {
            let polled = Pin::new(&mut body).poll_frame(cx);
            if std::mem::take(&mut first) {
                assert!(polled.is_pending());
                tx.send(line(&4u32)).unwrap();
            }
            polled
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from("3\n4\n"));
        tx.send(line(&5u32)).unwrap();
        drop(tx);
        let mut lines = Lines::new(body);
        assert_eq!(lines.next::<u32>().await.unwrap(), 5);
        assert!(matches!(lines.next::<u32>().await, Err(LinkError::Ended)));
    }

    #[tokio::test]
    async fn a_line_that_is_not_a_message_or_too_long_ends_the_link() {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(b"{not json\n")))];
        let mut lines = Lines::new(StreamBody::new(futures_util::stream::iter(frames)));
        assert!(matches!(
            lines.next::<u32>().await,
            Err(LinkError::Garbled(_))
        ));
        let long = vec![Ok::<_, Infallible>(Frame::data(Bytes::from(vec![
            b'x';
            MAX_LINE
                + 2
        ])))];
        let mut lines = Lines::new(StreamBody::new(futures_util::stream::iter(long)));
        assert!(matches!(lines.next::<u32>().await, Err(LinkError::TooLong)));
    }
}
