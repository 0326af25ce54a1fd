//! A full disk under the SQLite store: what does not fit is refused with a
//! 507 that says the store is full, nothing is half-written (an upload
//! that does not fit leaves no file), what was accepted before stays
//! readable and inference goes on; once space is freed, every accepted job
//! completes. The disk is a small tmpfs the test mounts (it needs root, as
//! the tests run here and in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use drover_tests::jobs::{get, quick, try_upload, until_state};
use drover_tests::{ClusterBuilder, chat_body, openai};
use serde_json::json;

/// A tmpfs of `size` mounted at a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!("drover-full-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root for it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    /// Fills the disk, then frees `room` bytes of it: a ballast file the
    /// test removes later to free the rest.
    fn leave_room(&self, room: u64) -> PathBuf {
        let ballast = self.dir.join("ballast");
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0x5a_u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        let len = std::fs::metadata(&ballast).unwrap().len();
        f.set_len(len.saturating_sub(room)).unwrap();
        ballast
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn big_job(i: usize) -> serde_json::Value {
    json!({
        "endpoint": "/v1/chat/completions",
        "body": chat_body("m", &format!("{i} {}", "x".repeat(96 * 1024))),
    })
}

fn files(listing: &serde_json::Value) -> usize {
    listing["data"].as_array().map_or(0, Vec::len)
}

async fn run(data: &Path, ballast: PathBuf) {
    let dir = data.to_path_buf();
    let cluster = ClusterBuilder::new()
        .sim("s", openai(&["m"], 2, 0))
        .hub(move |c| quick(c, &dir))
        .start()
        .await;
    // Accepted until the disk is full; then a 507 that says so.
    let mut accepted = Vec::new();
    let refused = loop {
        assert!(accepted.len() < 200, "the disk never filled");
        let r = cluster
            .client
            .post("/v1/jobs", &big_job(accepted.len()))
            .await;
        if r.status != 200 {
            break r;
        }
        accepted.push(r.json()["id"].as_str().unwrap().to_string());
    };
    assert_eq!(refused.status, 507, "{}", refused.text());
    assert_eq!(refused.error_code(), "store_full", "{}", refused.text());
    assert!(refused.text().contains("full"), "{}", refused.text());
    assert!(!accepted.is_empty(), "some jobs fit before the disk filled");

    // An upload that does not fit leaves no file behind.
    let before = files(&cluster.client.get("/v1/files").await.json());
    let line = json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": chat_body("m", &"y".repeat(64 * 1024))})
    .to_string();
    let jsonl = vec![line; 32].join("\n");
    let upload = try_upload(&cluster, &[], &jsonl).await;
    assert_eq!(upload.status, 507, "{}", upload.text());
    assert_eq!(
        files(&cluster.client.get("/v1/files").await.json()),
        before,
        "no half-written file"
    );

    // Reads and inference go on.
    for id in &accepted {
        get(&cluster, id).await;
    }
    let chat = cluster
        .client
        .post("/v1/chat/completions", &chat_body("m", "still here"))
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());

    // Space freed: every accepted job completes, and new ones are taken.
    std::fs::remove_file(&ballast).unwrap();
    for id in &accepted {
        until_state(&cluster, id, "completed").await;
    }
    let r = cluster.client.post("/v1/jobs", &big_job(0)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_what_does_not_fit_and_loses_nothing_accepted() {
    let disk = SmallDisk::mount("8m");
    let data = disk.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The hub's store made first, then the disk filled to 1.5 MiB short.
    {
        let dir = data.clone();
        let cluster = ClusterBuilder::new()
            .sim("s", openai(&["m"], 1, 0))
            .hub(move |c| quick(c, &dir))
            .start()
            .await;
        cluster.shutdown().await;
    }
    let ballast = disk.leave_room(1536 * 1024);
    tokio::time::timeout(Duration::from_secs(120), run(&data, ballast))
        .await
        .expect("the test ends within two minutes");
}
