//! The main listener's connections: how many each client address holds, which of them are
//! idle, and closing idle ones first when the listener is full (issue 23, item 6).
//!
//! Bounds: at most `server.max_connections` connections (the listener's semaphore), at most
//! `server.max_connections_per_address` of them from one address (an IPv6 client is its
//! /64, which one host usually holds whole); addresses in `server.trusted_proxies` are not
//! limited per address, since every client behind them shares theirs. When the listener is
//! full, a new connection closes the idle connection that has waited longest (one that
//! never sent a request before one that has), so sockets opened and left silent cannot
//! keep a client with a request out. Finding it is one pass over the open connections,
//! done only when the listener is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// What one address is counted as: itself (IPv4), or its /64 (IPv6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AddressKey(u128);

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey(u32::from(v4) as u128),
            IpAddr::V6(v6) => AddressKey((u128::from(v6) >> 64) | (1 << 127)),
        }
    }
}

struct Entry {
    key: AddressKey,
    /// Requests being answered on it (HTTP/1.1 answers one at a time; more is harmless).
    busy: usize,
    /// Since when nothing has been answered on it (or since it was opened).
    idle_since: Instant,
    /// Whether it has carried a request: a silent socket is closed before a kept-alive one.
    used: bool,
    /// Whether it is being served (not still waiting for a place on a full listener:
    /// one waiting is never the one closed to make room).
    serving: bool,
    /// Closes it outright (it is idle: nothing in progress is lost).
    close: CancellationToken,
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: HashMap<u64, Entry>,
    per_address: HashMap<AddressKey, usize>,
    /// Entries being served, and those of them answering a request (kept as they change,
    /// so reading them costs nothing).
    serving: usize,
    busy: usize,
}

/// The listener's connections at one moment (the `wrapup_connections_open` and
/// `wrapup_connections_busy` gauges; tests wait on them instead of sleeping).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections taken since the listener started (refused ones are not).
    pub accepted: u64,
    /// Connections being served now.
    pub open: usize,
    /// Of them, those answering a request now (the rest are idle).
    pub busy: usize,
}

impl Inner {
    fn publish(&self) {
        metrics::gauge!("wrapup_connections_open").set(self.serving as f64);
        metrics::gauge!("wrapup_connections_busy").set(self.busy as f64);
    }
}

/// The registry of open connections on one listener.
pub struct Connections {
    inner: Mutex<Inner>,
    per_address: usize,
}

/// Why a connection was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `max_connections_per_address` busy connections already.
    PerAddress,
}

impl Connections {
    pub fn new(per_address: usize) -> Arc<Self> {
        Arc::new(Connections {
            inner: Mutex::new(Inner::default()),
            per_address,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves counts that are still consistent enough to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a connection from `key` (`limited`: counted against the per-address limit).
    /// At the address's limit, its own longest-idle connection is closed to make room;
    /// when none of its connections is idle, the new one is refused.
    pub fn open(
        self: &Arc<Self>,
        key: AddressKey,
        limited: bool,
        close: CancellationToken,
    ) -> Result<Held, Refused> {
        let mut inner = self.lock();
        let held = inner.per_address.get(&key).copied().unwrap_or(0);
        if limited && held >= self.per_address && !close_idle(&mut inner, Some(key)) {
            return Err(Refused::PerAddress);
        }
        inner.next += 1;
        let id = inner.next;
        inner.open.insert(
            id,
            Entry {
                key,
                busy: 0,
                idle_since: Instant::now(),
                used: false,
                serving: false,
                close,
            },
        );
        *inner.per_address.entry(key).or_default() += 1;
        Ok(Held {
            id,
            connections: self.clone(),
        })
    }

    /// The listener is full: asks its longest-idle connection to close. False when every
    /// open connection is answering a request (or already closing).
    pub fn close_longest_idle(&self) -> bool {
        close_idle(&mut self.lock(), None)
    }

    /// Connections open now from `key` (for tests and the metrics).
    pub fn held_by(&self, key: AddressKey) -> usize {
        self.lock().per_address.get(&key).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> Counts {
        let inner = self.lock();
        Counts {
            accepted: inner.next,
            open: inner.serving,
            busy: inner.busy,
        }
    }
}

/// Cancels the close token of the longest-idle connection (of `only`, when given): one
/// that never carried a request first, then the one idle longest.
fn close_idle(inner: &mut Inner, only: Option<AddressKey>) -> bool {
    let victim = inner
        .open
        .iter()
        .filter(|(_, e)| e.serving && e.busy == 0 && !e.close.is_cancelled())
        .filter(|(_, e)| only.is_none_or(|k| e.key == k))
        .min_by_key(|(_, e)| (e.used, e.idle_since))
        .map(|(id, _)| *id);
    match victim.and_then(|id| inner.open.get(&id)) {
        Some(entry) => {
            entry.close.cancel();
            metrics::counter!("wrapup_connections_idle_closed_total").increment(1);
            true
        }
        None => false,
    }
}

/// One open connection; dropping it (the connection ended) forgets it.
pub struct Held {
    id: u64,
    connections: Arc<Connections>,
}

impl Held {
    /// It has its place and is being served: from now on it may be closed when idle.
    pub fn serving(&self) {
        let mut inner = self.connections.lock();
        if let Some(e) = inner.open.get_mut(&self.id)
            && !e.serving
        {
            e.serving = true;
            inner.serving += 1;
            inner.publish();
        }
    }

    /// A request starts on this connection; the returned guard marks its end when dropped
    /// (after the answer's body is sent).
    pub fn request(&self) -> Busy {
        let mut inner = self.connections.lock();
        if let Some(e) = inner.open.get_mut(&self.id) {
            e.busy += 1;
            e.used = true;
            if e.busy == 1 {
                inner.busy += 1;
                inner.publish();
            }
        }
        drop(inner);
        Busy {
            id: self.id,
            connections: self.connections.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut inner = self.connections.lock();
        let Some(entry) = inner.open.remove(&self.id) else {
            return;
        };
        if let Some(n) = inner.per_address.get_mut(&entry.key) {
            *n -= 1;
            if *n == 0 {
                inner.per_address.remove(&entry.key);
            }
        }
        inner.serving -= usize::from(entry.serving);
        inner.busy -= usize::from(entry.busy > 0);
        inner.publish();
    }
}

/// A request in progress on a connection.
pub struct Busy {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut inner = self.connections.lock();
        if let Some(e) = inner.open.get_mut(&self.id)
            && e.busy > 0
        {
            e.busy -= 1;
            e.idle_since = Instant::now();
            if e.busy == 0 {
                inner.busy -= 1;
                inner.publish();
            }
        }
    }
}

/// The client's address, for per-client limits (the console's sign-in): the request's
/// extension, set by every listener.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddress(pub IpAddr);

/// The client's address: the connection's peer, or, when the peer is one of
/// `server.trusted_proxies`, the address its `X-Forwarded-For` names: read from the right,
/// the first entry that is not itself a trusted proxy (an entry that is not an address
/// stops the walk at the last trusted hop, so a client cannot write its own address in
/// front of a proxy's). Bounded: at most 16 entries are read.
pub fn client_address(
    peer: IpAddr,
    forwarded_for: axum::http::header::GetAll<'_, axum::http::HeaderValue>,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let entries: Vec<&str> = forwarded_for
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev().take(16) {
        match forwarded_address(entry.trim()) {
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry as an address: plain (`203.0.113.7`, `2001:db8::1`), with
/// a port (`203.0.113.7:555`, `[2001:db8::1]:80`), bracketed, or with a zone
/// (`fe80::1%eth0`), as proxies write them; `None` for anything else.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.split_once(']'))
        .map_or(entry, |(inside, _)| inside);
    let bare = bare.split_once('%').map_or(bare, |(ip, _zone)| ip);
    bare.parse::<IpAddr>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(peer: &str, xff: &[&str], trusted: &[&str]) -> String {
        let mut headers = axum::http::HeaderMap::new();
        for v in xff {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_address(
            peer.parse().unwrap(),
            headers.get_all("x-forwarded-for"),
            &trusted,
        )
        .to_string()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy_and_read_from_the_right() {
        let proxies = ["10.0.0.0/8", "::1/128"];
        // Not from a proxy: the header is the client's own words.
        assert_eq!(forwarded("192.0.2.7", &["1.2.3.4"], &proxies), "192.0.2.7");
        // From a proxy: the entry it added (the rightmost), not what the client wrote.
        assert_eq!(
            forwarded("10.1.1.1", &["1.2.3.4, 198.51.100.9"], &proxies),
            "198.51.100.9"
        );
        assert_eq!(
            forwarded("10.1.1.1", &["1.2.3.4", "198.51.100.9, 10.2.2.2"], &proxies),
            "198.51.100.9"
        );
        // Ports, brackets and zones, as some proxies write them, are the address alone.
        assert_eq!(forwarded("10.1.1.1", &["1.2.3.7:555"], &proxies), "1.2.3.7");
        assert_eq!(
            forwarded("10.1.1.1", &["[2001:db8::1]:80"], &proxies),
            "2001:db8::1"
        );
        assert_eq!(
            forwarded("10.1.1.1", &["[2001:db8::2]"], &proxies),
            "2001:db8::2"
        );
        assert_eq!(
            forwarded("10.1.1.1", &["fe80::1%eth0"], &proxies),
            "fe80::1"
        );
        // Garbage stops the walk at the last hop that was trusted to say something.
        assert_eq!(
            forwarded("10.1.1.1", &["1.2.3.4, nonsense"], &proxies),
            "10.1.1.1"
        );
        // No header: the proxy itself.
        assert_eq!(forwarded("::1", &[], &proxies), "::1");
        assert_eq!(
            forwarded("::ffff:10.0.0.5", &["203.0.113.1"], &proxies),
            "203.0.113.1"
        );
    }

    fn key(s: &str) -> AddressKey {
        AddressKey::of(s.parse().unwrap())
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
    }

    #[test]
    fn at_the_address_limit_its_own_idle_connection_makes_room_and_a_busy_one_does_not() {
        let c = Connections::new(2);
        let a = key("10.0.0.1");
        let (t1, t2) = (CancellationToken::new(), CancellationToken::new());
        let first = c.open(a, true, t1.clone()).unwrap();
        let second = c.open(a, true, t2.clone()).unwrap();
        first.serving();
        second.serving();
        let _busy = first.request();
        // The idle one (second) is asked to close; the busy one is left alone.
        let third = c.open(a, true, CancellationToken::new()).unwrap();
        assert!(t2.is_cancelled() && !t1.is_cancelled());
        third.serving();
        // It is still open until its task ends: a fourth finds nothing idle to close.
        let _busy3 = third.request();
        assert_eq!(
            c.open(a, true, CancellationToken::new()).err(),
            Some(Refused::PerAddress)
        );
        // Another address, and an unlimited one, are not counted against it.
        assert!(
            c.open(key("10.0.0.2"), true, CancellationToken::new())
                .is_ok()
        );
        assert!(c.open(a, false, CancellationToken::new()).is_ok());
        drop(second);
        assert_eq!(c.held_by(a), 2);
    }

    #[test]
    fn a_full_listener_closes_a_silent_socket_before_a_kept_alive_one() {
        let c = Connections::new(100);
        let (kept, silent, waiting) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let k = c.open(key("10.0.0.1"), true, kept.clone()).unwrap();
        k.serving();
        drop(k.request()); // answered once, now idle (and idle longer than the silent one)
        let s = c.open(key("10.0.0.2"), true, silent.clone()).unwrap();
        s.serving();
        // Still waiting for its place: never the one closed.
        let _w = c.open(key("10.0.0.3"), true, waiting.clone()).unwrap();
        assert!(c.close_longest_idle());
        assert!(silent.is_cancelled() && !kept.is_cancelled());
        assert!(c.close_longest_idle());
        assert!(kept.is_cancelled());
        assert!(!c.close_longest_idle(), "nothing left to close");
        assert!(!waiting.is_cancelled());
    }
}
