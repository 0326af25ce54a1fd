//! The requests waiting in the hub, per model.
//!
//! Order inside one model's queue:
//! 1. Priority class, highest first, where a class's standing is its priority
//!    plus one point per `aging` that its oldest request has waited, so low
//!    priorities advance and nothing starves (invariant 5).
//! 2. Inside a class, round robin between clients (deficit round robin with
//!    a cost of one request), so one client's flood cannot stall the others.
//! 3. Inside a client, round robin between its users (the OpenAI `user`
//!    field): they share the client's turns, never add to them.
//! 4. Inside a user, oldest first.
//!
//! Every index is an ordered map, so a request leaves all of them at once in
//! O(log n) when it is cancelled: nothing stale is left for a later pop to
//! walk past, however many clients come and go.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use std::hash::Hash;
use std::time::Duration;

use drover_core::{ClientKey, ModelName, RequestId};

use crate::fleet::Api;
use crate::scheduler::Request;

#[derive(Debug)]
struct Entry {
    request: Request,
    /// Arrival order, to break ties between equal arrival times.
    seq: u64,
    /// Its place in its user's line: arrivals count up from 0, retries down
    /// from -1, so a retry goes to the front.
    line_key: i64,
}

/// Keys taking turns, with O(log n) removal.
#[derive(Debug)]
struct Ring<K> {
    order: BTreeMap<u64, K>,
    turn_of: FxHashMap<K, u64>,
    next: u64,
}

impl<K> Default for Ring<K> {
    fn default() -> Self {
        Ring {
            order: BTreeMap::new(),
            turn_of: FxHashMap::default(),
            next: 0,
        }
    }
}

impl<K: Copy + Eq + Hash> Ring<K> {
    /// Adds `key` at the back, or moves it there.
    fn send_to_back(&mut self, key: K) {
        self.remove(key);
        self.order.insert(self.next, key);
        self.turn_of.insert(key, self.next);
        self.next += 1;
    }

    fn add(&mut self, key: K) {
        if !self.turn_of.contains_key(&key) {
            self.send_to_back(key);
        }
    }

    fn remove(&mut self, key: K) {
        if let Some(turn) = self.turn_of.remove(&key) {
            self.order.remove(&turn);
        }
    }

    /// The keys, whose turn first.
    fn in_turn(&self) -> impl Iterator<Item = K> + '_ {
        self.order.values().copied()
    }

    /// Sends the first `n` keys to the back, in their order.
    fn rotate(&mut self, n: usize) {
        for _ in 0..n {
            let Some((_, key)) = self.order.pop_first() else {
                return;
            };
            self.turn_of.remove(&key);
            self.send_to_back(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

/// One client's waiting requests, per user.
#[derive(Debug, Default)]
struct ClientQueue {
    users: Ring<u64>,
    lines: FxHashMap<u64, BTreeMap<i64, RequestId>>,
}

#[derive(Debug, Default)]
struct Class {
    clients: FxHashMap<ClientKey, ClientQueue>,
    /// Clients with requests in this class, in turn order.
    ring: Ring<ClientKey>,
    /// Every request of the class by age, for the class's standing.
    by_age: BTreeMap<(Duration, u64), RequestId>,
}

#[derive(Debug, Default)]
struct ModelQueue {
    classes: BTreeMap<u8, Class>,
    /// Waiting requests that exclude backends (retries), so that looking
    /// for stranded retries costs nothing while there are none.
    retries: usize,
    /// Waiting requests that only some backends may take (another API
    /// than OpenAI's, or a pin), for the same reason.
    particular: usize,
}

/// Counts for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub waiting: usize,
    /// Bytes the waiting requests hold.
    pub bytes: usize,
    /// Waiting requests per model, sorted by model.
    pub by_model: Vec<(ModelName, usize)>,
    /// Waiting requests per priority, sorted by priority.
    pub by_priority: Vec<(u8, usize)>,
    /// Waiting requests per client, sorted by client.
    pub by_client: Vec<(ClientKey, usize)>,
}

#[derive(Debug)]
pub struct WaitQueue {
    entries: FxHashMap<RequestId, Entry>,
    models: FxHashMap<ModelName, ModelQueue>,
    deadlines: BTreeSet<(Duration, u64, RequestId)>,
    next_seq: u64,
    bytes: usize,
    aging: Duration,
}

impl WaitQueue {
    pub fn new(aging: Duration) -> Self {
        WaitQueue {
            entries: FxHashMap::default(),
            models: FxHashMap::default(),
            deadlines: BTreeSet::new(),
            next_seq: 0,
            bytes: 0,
            aging: aging.max(Duration::from_millis(1)),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the waiting requests hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len_for(&self, model: &str) -> usize {
        self.models.get(model).map_or(0, |q| {
            q.classes.values().map(|c| c.by_age.len()).sum::<usize>()
        })
    }

    /// Adds a request. A retried request keeps its arrival time, so it goes
    /// back ahead of everything that arrived after it, and to the front of
    /// its user's line.
    pub fn push(&mut self, request: Request, retry: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = request.id;
        let line_key = if retry { -1 - seq as i64 } else { seq as i64 };
        let mq = self.models.entry(request.model.clone()).or_default();
        if !request.exclude.is_empty() {
            mq.retries += 1;
        }
        if is_particular(&request) {
            mq.particular += 1;
        }
        let class = mq.classes.entry(request.priority.get()).or_default();
        class.ring.add(request.client);
        let client = class.clients.entry(request.client).or_default();
        client.users.add(request.user);
        client
            .lines
            .entry(request.user)
            .or_default()
            .insert(line_key, id);
        class.by_age.insert((request.arrival, seq), id);
        if let Some(deadline) = request.deadline {
            self.deadlines.insert((deadline, seq, id));
        }
        self.bytes += request.size;
        self.entries.insert(
            id,
            Entry {
                request,
                seq,
                line_key,
            },
        );
    }

    /// Removes a waiting request (its client left, it expired, or it was
    /// dispatched) from every index.
    pub fn remove(&mut self, id: RequestId) -> Option<Request> {
        let entry = self.entries.remove(&id)?;
        let r = &entry.request;
        self.bytes -= r.size;
        if let Some(deadline) = r.deadline {
            self.deadlines.remove(&(deadline, entry.seq, id));
        }
        if let Some(mq) = self.models.get_mut(&r.model) {
            if !r.exclude.is_empty() {
                mq.retries -= 1;
            }
            if is_particular(r) {
                mq.particular -= 1;
            }
            let prio = r.priority.get();
            if let Some(class) = mq.classes.get_mut(&prio) {
                class.by_age.remove(&(r.arrival, entry.seq));
                leave_line(class, r, entry.line_key);
                if class.by_age.is_empty() {
                    mq.classes.remove(&prio);
                }
            }
            if mq.classes.is_empty() {
                self.models.remove(&r.model);
            }
        }
        Some(entry.request)
    }

    /// Requests whose deadline is at or before `now`, earliest first.
    pub fn expired(&self, now: Duration) -> Vec<RequestId> {
        self.deadlines
            .iter()
            .take_while(|(d, _, _)| *d <= now)
            .map(|(_, _, id)| *id)
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadlines.first().map(|(d, _, _)| *d)
    }

    /// Ids of every request waiting for a model.
    pub fn ids_for(&self, model: &str) -> Vec<RequestId> {
        self.models.get(model).map_or_else(Vec::new, |q| {
            q.classes
                .values()
                .flat_map(|c| c.by_age.values().copied())
                .collect()
        })
    }

    /// When the oldest request waiting for a model arrived.
    pub fn oldest_for(&self, model: &str) -> Option<Duration> {
        self.models.get(model).and_then(|q| {
            q.classes
                .values()
                .filter_map(|c| c.by_age.keys().next().map(|(at, _)| *at))
                .min()
        })
    }

    /// The first waiting request for a model that `pred` picks, oldest
    /// first within each priority. Plain requests are alike as far as where
    /// they may go, so when only those wait, only one is looked at.
    pub(crate) fn find_for(
        &self,
        model: &str,
        pred: impl Fn(&Request) -> bool,
    ) -> Option<&Request> {
        let q = self.models.get(model)?;
        let mut all = q
            .classes
            .values()
            .rev()
            .flat_map(|c| c.by_age.values())
            .filter_map(|id| self.entries.get(id).map(|e| &e.request));
        if q.retries + q.particular == 0 {
            all.next().filter(|r| pred(r))
        } else {
            all.find(|r| pred(r))
        }
    }

    /// Waiting requests for a model that only some backends may take: a
    /// free slot where plain requests would not go may still be theirs.
    pub(crate) fn particular_for(&self, model: &str) -> usize {
        self.models
            .get(model)
            .map_or(0, |q| q.retries + q.particular)
    }

    /// Ids of the retries waiting for a model that `pred` picks; no work
    /// at all when none waits.
    pub fn retries_where(&self, model: &str, pred: impl Fn(&Request) -> bool) -> Vec<RequestId> {
        let Some(q) = self.models.get(model).filter(|q| q.retries > 0) else {
            return Vec::new();
        };
        q.classes
            .values()
            .flat_map(|c| c.by_age.values())
            .filter_map(|id| self.entries.get(id))
            .filter(|e| !e.request.exclude.is_empty() && pred(&e.request))
            .map(|e| e.request.id)
            .collect()
    }

    /// Takes the best waiting request for `model` that `can_place` accepts.
    /// Clients take turns, and within a client its users; each user's oldest
    /// request is offered. A client none of whose heads can be placed (they
    /// exclude the free backends) goes to the back of the ring.
    pub fn pop_best(
        &mut self,
        model: &str,
        now: Duration,
        mut can_place: impl FnMut(&Request) -> bool,
    ) -> Option<Request> {
        let mq = self.models.get_mut(model)?;
        let aging = self.aging.as_nanos();
        let mut order: Vec<(u128, u8)> = mq
            .classes
            .iter()
            .filter_map(|(prio, class)| {
                let ((oldest, _), _) = class.by_age.first_key_value()?;
                let waited = now.saturating_sub(*oldest).as_nanos();
                // Standing in nanosecond units: priority points plus aging.
                Some((u128::from(*prio) * aging + waited, *prio))
            })
            .collect();
        // Highest standing first; on a tie the higher base priority.
        order.sort_unstable_by(|a, b| b.cmp(a));

        let entries = &self.entries;
        let mut chosen = None;
        for (_, prio) in order {
            let Some(class) = mq.classes.get_mut(&prio) else {
                continue;
            };
            // Walk the ring without copying it: a dispatch usually takes
            // the first client's first user, however many wait.
            let mut walked = 0;
            let mut found = None;
            for client in class.ring.in_turn() {
                walked += 1;
                let Some(cq) = class.clients.get(&client) else {
                    continue;
                };
                found = cq.users.in_turn().find_map(|user| {
                    // The oldest request that can be placed, among the first
                    // few: a head that cannot (held for a busy backend, or
                    // excluding the free ones) does not block the line,
                    // and a long line costs a bounded look.
                    cq.lines
                        .get(&user)?
                        .values()
                        .take(LINE_LOOKAHEAD)
                        .find(|id| entries.get(id).is_some_and(|e| can_place(&e.request)))
                        .map(|id| (client, user, *id))
                });
                if found.is_some() {
                    break;
                }
            }
            // The chosen client, and those walked past, go to the back.
            class.ring.rotate(walked);
            if let Some((client, user, id)) = found {
                if let Some(cq) = class.clients.get_mut(&client) {
                    cq.users.send_to_back(user);
                }
                chosen = Some(id);
                break;
            }
        }
        self.remove(chosen?)
    }

    pub fn stats(&self) -> QueueStats {
        let mut by_model: Vec<(ModelName, usize)> = self
            .models
            .keys()
            .map(|m| (m.clone(), self.len_for(m.as_str())))
            .collect();
        by_model.sort();
        let mut prios: BTreeMap<u8, usize> = BTreeMap::new();
        let mut clients: BTreeMap<ClientKey, usize> = BTreeMap::new();
        for e in self.entries.values() {
            *prios.entry(e.request.priority.get()).or_default() += 1;
            *clients.entry(e.request.client).or_default() += 1;
        }
        QueueStats {
            waiting: self.entries.len(),
            bytes: self.bytes,
            by_model,
            by_priority: prios.into_iter().collect(),
            by_client: clients.into_iter().collect(),
        }
    }
}

/// Takes a request out of its user's line, and the user and the client out
/// of their rings once they have nothing left waiting.
fn leave_line(class: &mut Class, r: &Request, line_key: i64) {
    let Some(cq) = class.clients.get_mut(&r.client) else {
        return;
    };
    if let Some(line) = cq.lines.get_mut(&r.user) {
        line.remove(&line_key);
        if line.is_empty() {
            cq.lines.remove(&r.user);
            cq.users.remove(r.user);
        }
    }
    if cq.lines.is_empty() {
        class.clients.remove(&r.client);
        class.ring.remove(r.client);
    }
}

/// Requests of one user's line that a dispatch looks at, oldest first.
const LINE_LOOKAHEAD: usize = 16;

/// Speaks another API than OpenAI's, or must go to one backend.
fn is_particular(r: &Request) -> bool {
    r.api != Api::OpenAi || r.pin.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::Affinity;
    use drover_core::Priority;

    fn req(id: u64, client: u64, prio: u8, arrival_ms: u64) -> Request {
        Request {
            id: RequestId(id),
            model: ModelName::new("m"),
            priority: Priority::new(prio).unwrap(),
            client: ClientKey(client),
            arrival: Duration::from_millis(arrival_ms),
            deadline: None,
            affinity: Affinity::default(),
            exclude: Vec::new(),
            user: 0,
            size: 0,
            api: Default::default(),
            pin: None,
            prompt_tokens: 0,
            max_tokens: None,
        }
    }

    fn drain(q: &mut WaitQueue, now_ms: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(r) = q.pop_best("m", Duration::from_millis(now_ms), |_| true) {
            out.push(r.id.0);
        }
        out
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let mut q = WaitQueue::new(Duration::from_secs(3600));
        q.push(req(1, 1, 50, 0), false);
        q.push(req(2, 1, 90, 1), false);
        q.push(req(3, 1, 50, 2), false);
        q.push(req(4, 1, 10, 3), false);
        assert_eq!(drain(&mut q, 10), vec![2, 1, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn clients_take_turns_inside_a_class() {
        let mut q = WaitQueue::new(Duration::from_secs(3600));
        // Client 1 floods first; client 2 arrives later with two requests.
        for i in 0..5 {
            q.push(req(10 + i, 1, 50, i), false);
        }
        q.push(req(20, 2, 50, 100), false);
        q.push(req(21, 2, 50, 101), false);
        assert_eq!(drain(&mut q, 200), vec![10, 20, 11, 21, 12, 13, 14]);
    }

    #[test]
    fn aging_lifts_a_low_priority_request_that_waited_long() {
        // One priority point per second of waiting.
        let mut q = WaitQueue::new(Duration::from_secs(1));
        q.push(req(1, 1, 10, 0), false);
        q.push(req(2, 1, 50, 30_000), false);
        // At t=30 s the old request stands at 10 + 30 = 40 < 50.
        assert_eq!(
            q.pop_best("m", Duration::from_secs(30), |_| true)
                .map(|r| r.id.0),
            Some(2)
        );
        q.push(req(3, 1, 50, 45_000), false);
        // At t=45 s it stands at 10 + 45 = 55 > 50.
        assert_eq!(
            q.pop_best("m", Duration::from_secs(45), |_| true)
                .map(|r| r.id.0),
            Some(1)
        );
    }

    #[test]
    fn cancelled_requests_vanish_from_every_index() {
        let mut q = WaitQueue::new(Duration::from_secs(1));
        let mut r = req(1, 1, 50, 0);
        r.deadline = Some(Duration::from_secs(5));
        q.push(r, false);
        q.push(req(2, 1, 50, 1), false);
        assert!(q.remove(RequestId(1)).is_some());
        assert!(q.remove(RequestId(1)).is_none());
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.len_for("m"), 1);
        assert_eq!(drain(&mut q, 10), vec![2]);
        assert!(q.models.is_empty(), "empty model queues are dropped");
    }

    #[test]
    fn requests_that_leave_leave_nothing_behind() {
        let mut q = WaitQueue::new(Duration::from_secs(1));
        // One request that stays, so the class lives on.
        q.push(req(1, 1, 50, 0), false);
        for i in 0..1000 {
            let mut r = req(100 + i, 1000 + i, 50, i);
            r.size = 10;
            q.push(r, false);
            assert!(q.remove(RequestId(100 + i)).is_some());
        }
        let class = &q.models[&ModelName::new("m")].classes[&50];
        assert_eq!(class.ring.len(), 1);
        assert_eq!(class.clients.len(), 1);
        assert_eq!(class.by_age.len(), 1);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn users_share_their_clients_turns() {
        let mut q = WaitQueue::new(Duration::from_secs(3600));
        // Client 1 rotates its user field on every request; client 2 sends
        // as one user. They still alternate.
        for i in 0..5 {
            let mut r = req(10 + i, 1, 50, i);
            r.user = 100 + i;
            q.push(r, false);
        }
        for i in 0..3 {
            q.push(req(20 + i, 2, 50, 10 + i), false);
        }
        assert_eq!(drain(&mut q, 100), vec![10, 20, 11, 21, 12, 22, 13, 14]);
    }

    #[test]
    fn within_a_client_users_take_turns() {
        let mut q = WaitQueue::new(Duration::from_secs(3600));
        for (id, user, at) in [(1, 7, 0), (2, 7, 1), (3, 7, 2), (4, 8, 3), (5, 8, 4)] {
            let mut r = req(id, 1, 50, at);
            r.user = user;
            q.push(r, false);
        }
        assert_eq!(drain(&mut q, 100), vec![1, 4, 2, 5, 3]);
    }

    #[test]
    fn retries_go_to_the_front_of_their_clients_line() {
        let mut q = WaitQueue::new(Duration::from_secs(3600));
        q.push(req(2, 1, 50, 5), false);
        q.push(req(1, 1, 50, 0), true);
        assert_eq!(drain(&mut q, 10), vec![1, 2]);
    }

    #[test]
    fn an_unplaceable_head_does_not_block_other_clients() {
        let mut q = WaitQueue::new(Duration::from_secs(3600));
        q.push(req(1, 1, 50, 0), false);
        q.push(req(2, 2, 50, 1), false);
        let got = q.pop_best("m", Duration::from_millis(5), |r| r.id.0 != 1);
        assert_eq!(got.map(|r| r.id.0), Some(2));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn expiry_lists_requests_by_deadline() {
        let mut q = WaitQueue::new(Duration::from_secs(1));
        for (id, d) in [(1, 30), (2, 10), (3, 20)] {
            let mut r = req(id, 1, 50, 0);
            r.deadline = Some(Duration::from_secs(d));
            q.push(r, false);
        }
        assert_eq!(q.next_deadline(), Some(Duration::from_secs(10)));
        assert_eq!(
            q.expired(Duration::from_secs(20)),
            vec![RequestId(2), RequestId(3)]
        );
    }
}
