//! The publisher's bookkeeping, without I/O (as rumqttc's `state.rs` is to
//! its `eventloop.rs`): what is due to be handed to the MQTT client next,
//! what is in flight under which packet id, what a PUBACK acknowledged, and
//! where to start again after a reconnect. The publisher
//! (`publisher.rs`) owns the sockets and the spool and asks the [`Outbox`];
//! tests drive it without a broker.
//!
//! The spool, not this, is the outbox's memory across connections and
//! restarts: a detection is handed out only once it is spooled (and
//! fsynced), and only its PUBACK lets the publisher delete it. After each
//! CONNACK the cursor goes back to the oldest spooled seq, so whatever was
//! not acknowledged on the previous connection is sent again, with the
//! same seq (at-least-once).
//!
//! Order on the wire: spooled detections in seq order, then the latest
//! heartbeat, then queued snippets, then (at the end) the final `offline`
//! status. A heartbeat is offered only when no spooled detection is left to
//! hand out, so it never overtakes a detection spooled before it; a
//! snippet likewise (its detection was spooled before it was queued), and
//! at most [`SNIPPETS_IN_FLIGHT`] at a time, so that snippets never fill
//! the window a detection spooled next needs.

use std::collections::{HashMap, VecDeque};

/// Snippets handed out and not yet acknowledged, at most. A snippet is
/// ~32 KB against a detection's ~600 B: two in flight keep the link busy
/// while leaving the rest of the window to detections.
pub(crate) const SNIPPETS_IN_FLIGHT: usize = 2;

/// One publish the outbox asks for, or has in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    /// The spooled detection with this seq.
    Detection(u64),
    /// The latest heartbeat status (retained).
    Status,
    /// The final status (`offline`, retained).
    Final,
    /// The oldest queued snippet (of the detection with this seq); memory
    /// only: lost with a connection (counted), never sent twice.
    Snippet(u64),
}

/// Queue state of the publisher (see the module docs).
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Most publishes handed out and not yet acknowledged.
    window: usize,
    /// A CONNACK was received on the current connection.
    connected: bool,
    /// Handed to the client, waiting for their packet id (in order).
    handed: VecDeque<Item>,
    /// Packet id → what it carries.
    inflight: HashMap<u16, Item>,
    /// Next seq to look for in the spool (entries below were handed out on
    /// this connection).
    cursor: u64,
    /// A heartbeat has been given ([`Outbox::status_updated`]).
    has_status: bool,
    /// The latest heartbeat was handed out on this connection.
    status_sent: bool,
    /// The node is ending ([`Outbox::end`]): the final status is due.
    ending: bool,
    /// The final status was handed out on this connection.
    final_sent: bool,
    /// The broker acknowledged the final status (on any connection).
    final_acked: bool,
    /// Snippets handed out and lost with their connection.
    snippets_lost: u64,
}

impl Outbox {
    /// An empty outbox, disconnected, allowing `window` publishes in flight.
    pub fn new(window: usize) -> Outbox {
        Outbox {
            window: window.max(1),
            connected: false,
            handed: VecDeque::new(),
            inflight: HashMap::new(),
            cursor: 0,
            has_status: false,
            status_sent: false,
            ending: false,
            final_sent: false,
            final_acked: false,
            snippets_lost: 0,
        }
    }

    /// Whether a CONNACK was received on the current connection.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// CONNACK: start again from the oldest spooled seq, re-send the latest
    /// heartbeat and, when ending, the final status.
    pub fn connected(&mut self) {
        self.connected = true;
        self.forget_in_flight();
        self.cursor = 0;
        self.status_sent = !self.has_status;
        self.final_sent = false;
    }

    /// The connection is gone (or a new one is being opened): what was in
    /// flight is forgotten (the spool still holds every unacknowledged
    /// detection; a clean session drops rumqttc's copies).
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.forget_in_flight();
    }

    fn forget_in_flight(&mut self) {
        self.snippets_lost += self.snippets_out() as u64;
        self.handed.clear();
        self.inflight.clear();
    }

    /// Snippets handed out and not yet acknowledged.
    fn snippets_out(&self) -> usize {
        let is_snippet = |i: &Item| matches!(i, Item::Snippet(_));
        self.handed.iter().filter(|i| is_snippet(i)).count()
            + self.inflight.values().filter(|i| is_snippet(i)).count()
    }

    /// Snippets handed out and lost with their connection, so far.
    pub fn snippets_lost(&self) -> u64 {
        self.snippets_lost
    }

    /// A new heartbeat is the latest: it is due (after the detections
    /// spooled before it).
    pub fn status_updated(&mut self) {
        self.has_status = true;
        self.status_sent = false;
    }

    /// The pipeline ended: the final status is due after everything else.
    pub fn end(&mut self) {
        self.ending = true;
    }

    /// The next publish to hand out, if connected and the window allows.
    /// `next_spooled(cursor)` is the oldest spooled seq at or after
    /// `cursor` (the spool's `next_at_or_after`). Once the item is handed
    /// to the client call [`Outbox::handed`]; if it cannot be (a spool
    /// entry gone or unreadable), [`Outbox::skip`].
    #[cfg(test)]
    pub fn next(&self, next_spooled: impl FnOnce(u64) -> Option<u64>) -> Option<Item> {
        self.next_with(next_spooled, None)
    }

    /// [`Outbox::next`], with `snippet` the seq of the oldest queued
    /// snippet (if any): offered after every spooled detection and the
    /// heartbeat, before the final status.
    pub fn next_with(
        &self,
        next_spooled: impl FnOnce(u64) -> Option<u64>,
        snippet: Option<u64>,
    ) -> Option<Item> {
        if !self.connected || self.handed.len() + self.inflight.len() >= self.window {
            return None;
        }
        if let Some(seq) = next_spooled(self.cursor) {
            return Some(Item::Detection(seq));
        }
        if self.has_status && !self.status_sent {
            return Some(Item::Status);
        }
        if let Some(seq) = snippet {
            if self.snippets_out() < SNIPPETS_IN_FLIGHT {
                return Some(Item::Snippet(seq));
            }
        }
        // The final status goes out once everything before it was
        // acknowledged, so that it reports an empty spool (a final status
        // handed out with detections still in flight said "backlog 2" while
        // they were being acknowledged).
        if self.ending && !self.final_sent && self.handed.is_empty() && self.inflight.is_empty() {
            return Some(Item::Final);
        }
        None
    }

    /// `item` (from [`Outbox::next`]) was handed to the client.
    pub fn handed(&mut self, item: Item) {
        self.skip(item);
        self.handed.push_back(item);
    }

    /// `item` (from [`Outbox::next`]) will not be handed out (a spool
    /// entry gone, or unreadable and discarded; a status with no payload):
    /// move past it without anything in flight.
    pub fn skip(&mut self, item: Item) {
        match item {
            Item::Detection(seq) => self.cursor = seq + 1,
            Item::Status => self.status_sent = true,
            Item::Final => self.final_sent = true,
            Item::Snippet(_) => {}
        }
    }

    /// The client sent the oldest handed-out publish with packet id `pkid`.
    pub fn outgoing(&mut self, pkid: u16) {
        if let Some(item) = self.handed.pop_front() {
            self.inflight.insert(pkid, item);
        }
    }

    /// PUBACK for `pkid`: what it acknowledged (`None` for an unknown id).
    /// A detection may now be deleted from the spool.
    pub fn acked(&mut self, pkid: u16) -> Option<Item> {
        let item = self.inflight.remove(&pkid)?;
        if item == Item::Final {
            self.final_acked = true;
        }
        Some(item)
    }

    /// The broker acknowledged the final status.
    pub fn final_acked(&self) -> bool {
        self.final_acked
    }

    /// Publishes handed out and not yet acknowledged on this connection.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.handed.len() + self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The spool as a set of seqs.
    fn next_in(spool: &BTreeSet<u64>) -> impl Fn(u64) -> Option<u64> + '_ {
        |cursor| spool.range(cursor..).next().copied()
    }

    /// Hand out everything the outbox offers; each gets the next packet id.
    fn pump(o: &mut Outbox, spool: &BTreeSet<u64>, pkid: &mut u16) -> Vec<(u16, Item)> {
        let mut out = Vec::new();
        while let Some(item) = o.next(next_in(spool)) {
            o.handed(item);
            *pkid += 1;
            o.outgoing(*pkid);
            out.push((*pkid, item));
        }
        out
    }

    fn items(sent: &[(u16, Item)]) -> Vec<Item> {
        sent.iter().map(|s| s.1).collect()
    }

    #[test]
    fn nothing_is_offered_before_a_connack() {
        let spool = BTreeSet::from([1, 2]);
        let mut o = Outbox::new(8);
        o.status_updated();
        assert_eq!(o.next(next_in(&spool)), None);
        o.connected();
        assert_eq!(o.next(next_in(&spool)), Some(Item::Detection(1)));
    }

    #[test]
    fn detections_go_in_seq_order_then_the_heartbeat_then_the_final_status() {
        let mut spool = BTreeSet::from([3, 4, 7]);
        let mut o = Outbox::new(16);
        o.status_updated();
        o.end();
        o.connected();
        let mut pkid = 0;
        let sent = pump(&mut o, &spool, &mut pkid);
        assert_eq!(
            items(&sent),
            [
                Item::Detection(3),
                Item::Detection(4),
                Item::Detection(7),
                Item::Status,
            ]
        );
        // The final status waits until everything before it is
        // acknowledged: it reports an empty spool.
        assert_eq!(pump(&mut o, &spool, &mut pkid), []);
        for (id, item) in &sent {
            assert_eq!(o.acked(*id), Some(*item));
            if let Item::Detection(seq) = item {
                spool.remove(seq);
            }
        }
        assert_eq!(items(&pump(&mut o, &spool, &mut pkid)), [Item::Final]);
        assert_eq!(pump(&mut o, &spool, &mut pkid), [], "each is sent once");
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_acks_open_it() {
        let spool: BTreeSet<u64> = (1..=5).collect();
        let mut o = Outbox::new(2);
        o.connected();
        let mut pkid = 0;
        let sent = pump(&mut o, &spool, &mut pkid);
        assert_eq!(items(&sent), [Item::Detection(1), Item::Detection(2)]);
        assert_eq!(o.in_flight(), 2);
        assert_eq!(o.acked(sent[0].0), Some(Item::Detection(1)));
        assert_eq!(
            o.acked(sent[0].0),
            None,
            "a duplicate PUBACK acknowledges nothing"
        );
        assert_eq!(
            items(&pump(&mut o, &spool, &mut pkid)),
            [Item::Detection(3)]
        );
    }

    #[test]
    fn a_heartbeat_never_overtakes_a_detection_spooled_before_it() {
        let mut spool = BTreeSet::from([1]);
        let mut o = Outbox::new(16);
        o.connected();
        let mut pkid = 0;
        assert_eq!(
            items(&pump(&mut o, &spool, &mut pkid)),
            [Item::Detection(1)]
        );
        // The pipeline spools seq 2, then sends a heartbeat.
        spool.insert(2);
        o.status_updated();
        assert_eq!(
            items(&pump(&mut o, &spool, &mut pkid)),
            [Item::Detection(2), Item::Status]
        );
        // A newer heartbeat replaces the sent one and is due again.
        o.status_updated();
        assert_eq!(items(&pump(&mut o, &spool, &mut pkid)), [Item::Status]);
    }

    #[test]
    fn after_a_reconnect_everything_unacknowledged_is_sent_again_with_its_seq() {
        let mut spool = BTreeSet::from([1, 2, 3]);
        let mut o = Outbox::new(16);
        o.status_updated();
        o.connected();
        let mut pkid = 0;
        let sent = pump(&mut o, &spool, &mut pkid);
        // Only seq 1 is acknowledged (and so deleted from the spool).
        assert_eq!(o.acked(sent[0].0), Some(Item::Detection(1)));
        spool.remove(&1);
        o.disconnected();
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.next(next_in(&spool)), None, "nothing while disconnected");
        // A PUBACK from the old connection acknowledges nothing.
        assert_eq!(o.acked(sent[1].0), None);
        o.connected();
        assert_eq!(
            items(&pump(&mut o, &spool, &mut pkid)),
            [Item::Detection(2), Item::Detection(3), Item::Status]
        );
    }

    #[test]
    fn the_final_status_is_acknowledged_once_and_for_all() {
        let spool = BTreeSet::new();
        let mut o = Outbox::new(4);
        o.end();
        o.connected();
        let mut pkid = 0;
        let sent = pump(&mut o, &spool, &mut pkid);
        assert_eq!(items(&sent), [Item::Final], "no heartbeat was ever given");
        assert!(!o.final_acked());
        assert_eq!(o.acked(sent[0].0), Some(Item::Final));
        assert!(o.final_acked());
        o.disconnected();
        o.connected();
        assert!(o.final_acked());
    }

    #[test]
    fn a_skipped_entry_is_passed_over() {
        let spool = BTreeSet::from([5, 6]);
        let mut o = Outbox::new(4);
        o.connected();
        assert_eq!(o.next(next_in(&spool)), Some(Item::Detection(5)));
        o.skip(Item::Detection(5));
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.next(next_in(&spool)), Some(Item::Detection(6)));
    }

    #[test]
    fn snippets_go_after_the_detections_two_at_a_time_and_are_lost_with_the_connection() {
        let spool = BTreeSet::from([1, 2]);
        let mut o = Outbox::new(8);
        o.connected();
        // Snippet 1 is queued, but detections 1 and 2 are spooled: they go first.
        let mut got = Vec::new();
        let mut pkid = 0u16;
        while let Some(item) = o.next_with(next_in(&spool), Some(1)) {
            o.handed(item);
            pkid += 1;
            o.outgoing(pkid);
            got.push(item);
            if matches!(item, Item::Snippet(_)) {
                break; // the publisher takes it off its queue
            }
        }
        assert_eq!(
            got,
            [Item::Detection(1), Item::Detection(2), Item::Snippet(1)]
        );
        o.handed(Item::Snippet(2));
        assert_eq!(
            o.next_with(next_in(&spool), Some(3)),
            None,
            "at most SNIPPETS_IN_FLIGHT snippets in flight"
        );
        // A detection spooled now is not held back by them.
        let spool = BTreeSet::from([1, 2, 3]);
        assert_eq!(
            o.next_with(next_in(&spool), Some(3)),
            Some(Item::Detection(3))
        );
        assert_eq!(o.acked(3), Some(Item::Snippet(1)));
        o.disconnected();
        assert_eq!(o.snippets_lost(), 1, "snippet 2 was in flight");
    }
}
