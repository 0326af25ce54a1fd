//! Fills a store with jobs for `bench/jobs-memory.sh`: TOTAL jobs for model
//! `m`, of which DONE are claimed and completed (with a small answer) and
//! the rest wait. Only through the store's own API.
//!
//!   cargo run --release -p drover-store --example fill -- sqlite:DIR/drover.db 1000000 900000
//!   cargo run --release -p drover-store --example fill -- 'postgres://u@h/db?schema=s' 1000000 900000

use drover_store::{Answer, Attempt, Claim, Finish, JobKind, JobState, Location, NewJob, Store};

const CHUNK: usize = 10_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, total, done] = args.as_slice() else {
        return Err("usage: fill URL TOTAL DONE".into());
    };
    let (total, done): (usize, usize) = (total.parse()?, done.parse()?);
    let store = Store::open(Location::parse(url)?, "bench fill").await?;
    let body =
        br#"{"model":"m","messages":[{"role":"user","content":"a question of a few words"}]}"#;
    let mut made = 0;
    while made < total {
        let n = CHUNK.min(total - made);
        let jobs: Vec<NewJob> = (made..made + n)
            .map(|i| NewJob::chat(&format!("job_{:032}", i), "m", body.to_vec()))
            .collect();
        store.insert_jobs(&jobs).await?;
        made += n;
    }
    let mut finished = 0;
    while finished < done {
        let claimed = store
            .claim(&Claim {
                kind: JobKind::Inference,
                owner: "bench-fill",
                limit: CHUNK.min(done - finished) as u32,
                now: 1,
                lease_ms: 3_600_000,
                skip_batches: &[],
                skip_keys: &[],
                fence: None,
            })
            .await?;
        if claimed.is_empty() {
            break;
        }
        let finishes: Vec<Finish> = claimed
            .iter()
            .map(|c| Finish {
                lease: c.lease.clone(),
                state: JobState::Completed,
                run_at: None,
                attempts: vec![Attempt {
                    number: 1,
                    started_at: 1,
                    ended_at: 2,
                    backends: vec!["sim".into()],
                    status: Some(200),
                    error: None,
                }],
                failed_backends: Vec::new(),
                answer: Some(Answer {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: br#"{"choices":[{"message":{"role":"assistant","content":"an answer of a few words"}}]}"#.to_vec(),
                }),
                then: None,
                at: 2,
            })
            .collect();
        store.finish(&finishes).await?;
        finished += claimed.len();
    }
    store.close().await;
    println!("{made} jobs, {finished} completed");
    Ok(())
}
