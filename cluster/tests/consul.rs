//! Integration tests against a real Consul agent (`consul agent -dev`, or a one-node server
//! where data must survive a restart), started and killed by each test.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cluster::consul::Consul;
use cluster::testing::ConsulAgent;
use cluster::{Error, Expect, PublishMeta, Source, Store, CHUNK_SIZE};
use common::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_list_get_rollback() {
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = store(&agent, "xdplb/t1", &dir.path().join("s"), T);

    assert_eq!(s.current().await.unwrap(), None);
    assert!(s.list().await.unwrap().is_empty());
    assert!(matches!(
        s.get(1).await,
        Err(Error::NotFound { version: 1 })
    ));

    let texts: Vec<String> = (0..3)
        .map(|i| config_text(1, 3, &format!("v{i}")))
        .collect();
    for (i, t) in texts.iter().enumerate() {
        let m = s.publish(t, publish_meta(t)).await.unwrap();
        assert_eq!(m.version, i as u64 + 1);
        assert_eq!(m.parent, if i == 0 { None } else { Some(i as u64) });
        assert_eq!(m.services["web"].checksum, checksum(t));
        assert_eq!(m.chunks, 1);
    }
    let list = s.list().await.unwrap();
    assert_eq!(
        list.iter().map(|m| m.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(s.current().await.unwrap(), Some(3));
    let v2 = s.get(2).await.unwrap();
    assert_eq!(v2.text, texts[1]);
    assert_eq!(v2.meta, list[1]);

    // Rollback with the optimistic check: only from the version we looked at.
    s.set_current(1, Expect::Current(Some(3))).await.unwrap();
    assert_eq!(s.current().await.unwrap(), Some(1));
    match s.set_current(2, Expect::Current(Some(3))).await {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!((expected, actual), (Some(3), Some(1)))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        s.set_current(9, Expect::Any).await,
        Err(Error::NotFound { version: 9 })
    ));
    // A publish based on a stale view is refused; versions stay as they were.
    let t = config_text(1, 4, "stale");
    let mut meta = publish_meta(&t);
    meta.expect = Expect::Current(Some(3));
    assert!(matches!(
        s.publish(&t, meta).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(s.versions().await.unwrap(), [1, 2, 3]);
    // Roll forward again; versions are immutable, the numbers keep counting.
    s.set_current(3, Expect::Current(Some(1))).await.unwrap();
    let m = s.publish(&t, publish_meta(&t)).await.unwrap();
    assert_eq!((m.version, m.parent), (4, Some(3)));

    // A director republishing its unchanged file creates no version.
    let (m4, created) = s.publish_if_changed(&t, publish_meta(&t)).await.unwrap();
    assert_eq!((m4.version, created), (4, false));
    let t5 = config_text(1, 5, "changed");
    let (m5, created) = s.publish_if_changed(&t5, publish_meta(&t5)).await.unwrap();
    assert_eq!((m5.version, created), (5, true));

    // Pruning keeps the newest and never the live one.
    s.set_current(1, Expect::Any).await.unwrap();
    // What a publisher that died mid-write leaves: chunks, no meta. Invisible, then pruned.
    let raw = Consul::new(&agent.config("xdplb/t1", &dir.path().join("s"))).unwrap();
    raw.write("xdplb/t1/versions/99/chunk/0", b"half".to_vec(), Some(0))
        .await
        .unwrap();
    assert_eq!(s.versions().await.unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(s.prune(2).await.unwrap(), [2, 3, 99]);
    assert_eq!(s.versions().await.unwrap(), [1, 4, 5]);
}

/// Many publishers at once, each on its own connection: every publish gets its own number,
/// numbers are dense, nothing is lost, and whenever `current` moves it points at a complete
/// version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_lose_nothing() {
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    const PUBLISHERS: usize = 6;
    const EACH: usize = 5;

    // A watcher that reads every version `current` points at, while publishing goes on.
    let watch_store = store(&agent, "xdplb/t2", &dir.path().join("w"), T);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let mut index = 0;
        let mut seen = BTreeSet::new();
        loop {
            tokio::select! {
                _ = &mut stop_rx => return seen,
                w = watch_store.watch_current(index) => {
                    let w = w.unwrap();
                    index = w.index.max(1);
                    if let Some(v) = w.version {
                        let got = watch_store.get(v).await.unwrap_or_else(|e| panic!("current -> incomplete version {v}: {e}"));
                        assert_eq!(got.meta.version, v);
                        seen.insert(v);
                    }
                }
            }
        }
    });

    // Stores first (building a TLS-capable client takes a while in debug builds), then all
    // publishers start together.
    let stores: Vec<_> = (0..PUBLISHERS)
        .map(|p| store(&agent, "xdplb/t2", &dir.path().join(format!("p{p}")), T))
        .collect();
    let start = Arc::new(tokio::sync::Barrier::new(PUBLISHERS));
    let mut tasks = Vec::new();
    for (p, s) in stores.into_iter().enumerate() {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut mine = Vec::new();
            for i in 0..EACH {
                let t = config_text(1, 2, &format!("publisher {p} edit {i}"));
                let m = s.publish(&t, publish_meta(&t)).await.unwrap();
                mine.push((m.version, t));
            }
            mine
        }));
    }
    let mut published = Vec::new();
    let mut interleaved = false;
    for t in tasks {
        let mine = t.await.unwrap();
        interleaved |= mine.windows(2).any(|w| w[1].0 != w[0].0 + 1);
        published.extend(mine);
    }
    assert!(
        interleaved,
        "publishers did not contend; the test proves nothing"
    );
    let s = store(&agent, "xdplb/t2", &dir.path().join("check"), T);
    let numbers: BTreeSet<u64> = published.iter().map(|(v, _)| *v).collect();
    let total = (PUBLISHERS * EACH) as u64;
    assert_eq!(numbers, (1..=total).collect(), "dense and distinct");
    assert_eq!(s.versions().await.unwrap(), (1..=total).collect::<Vec<_>>());
    for (v, text) in &published {
        assert_eq!(&s.get(*v).await.unwrap().text, text, "version {v}");
    }
    // Serialised publishers make versions live in number order.
    assert_eq!(s.current().await.unwrap(), Some(total));
    let _ = stop_tx.send(());
    let seen = watcher.await.unwrap();
    assert!(seen.contains(&total), "watcher saw {seen:?}");
}

/// Optimistic read-modify-write: each writer increments a counter in the text and publishes
/// with `Expect::Current`; on conflict it re-reads and redoes. No increment may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_never_lose_an_update() {
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s0 = store(&agent, "xdplb/t3", &dir.path().join("s"), T);
    s0.publish("count: 0\n", publish_meta("count: 0\n"))
        .await
        .unwrap();
    const WRITERS: usize = 4;
    const EACH: usize = 4;
    let stores: Vec<_> = (0..WRITERS)
        .map(|w| store(&agent, "xdplb/t3", &dir.path().join(format!("w{w}")), T))
        .collect();
    let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for s in stores {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut conflicts = 0;
            for _ in 0..EACH {
                loop {
                    let cur = s.current().await.unwrap();
                    let text = s.get(cur.unwrap()).await.unwrap().text;
                    let n: u64 = text.trim().trim_start_matches("count: ").parse().unwrap();
                    let next = format!("count: {}\n", n + 1);
                    let mut meta = publish_meta(&next);
                    meta.expect = Expect::Current(cur);
                    match s.publish(&next, meta).await {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let cur = s0.current().await.unwrap().unwrap();
    let text = s0.get(cur).await.unwrap().text;
    assert_eq!(text, format!("count: {}\n", WRITERS * EACH));
    assert_eq!(
        cur,
        1 + (WRITERS * EACH) as u64,
        "one version per successful edit"
    );
    eprintln!("{conflicts} conflicts resolved by redoing the edit");
    assert!(
        conflicts > 0,
        "the writers did not contend; the test proves nothing"
    );
}

/// Three directors follow one Consul through publish, drain and rollback, and always end on
/// the same version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_followers_converge() {
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let publisher = store(&agent, "xdplb/t4", &dir.path().join("p"), T);
    let followers: Vec<Running> = (0..3)
        .map(|i| {
            let state = dir.path().join(format!("d{i}/state.json"));
            spawn_follower(store(&agent, "xdplb/t4", &state, T), &state, 0)
        })
        .collect();

    let base = config_text(1, 3, "base");
    let drained = base.replacen("state: active", "state: draining", 1);
    let steps: Vec<(&str, Option<&String>, u64)> = vec![
        ("publish", Some(&base), 1),
        ("drain", Some(&drained), 2),
        ("rollback", None, 1),
    ];
    for (what, text, want) in steps {
        match text {
            Some(t) => {
                publisher.publish(t, publish_meta(t)).await.unwrap();
            }
            None => publisher.set_current(want, Expect::Any).await.unwrap(),
        }
        for f in &followers {
            f.wait_for(what, T, |s| {
                s.in_sync() && s.applied_version() == Some(want)
            })
            .await;
        }
    }
    for f in &followers {
        let a = f.applied.lock().unwrap();
        assert_eq!(
            a.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [1, 2, 1],
            "each version applied once, in order"
        );
        assert_eq!(a.last().unwrap().1, base);
        let st = f.status();
        assert_eq!(st.applied.unwrap().source, Source::Consul);
        assert!(st.rejected.is_none());
    }
    // Every director persisted the live version.
    for i in 0..3 {
        let saved = cluster::state::load(&dir.path().join(format!("d{i}/state.json")))
            .unwrap()
            .unwrap();
        assert_eq!((saved.meta.version, &saved.text), (1, &base));
    }
    for f in followers {
        f.stop().await;
    }
}

/// A version whose checksum a director cannot reproduce is refused, reported, and the last
/// good version keeps serving; the next good version is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreproducible_checksum_is_refused_and_reported() {
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let publisher = store(&agent, "xdplb/t5", &dir.path().join("p"), T);
    let state = dir.path().join("d/state.json");
    let f = spawn_follower(store(&agent, "xdplb/t5", &state, T), &state, 0);

    let good = config_text(1, 3, "good");
    publisher.publish(&good, publish_meta(&good)).await.unwrap();
    f.wait_for("v1", T, |s| s.applied_version() == Some(1))
        .await;

    // Published by "another tablegen": the checksum does not match what this director builds.
    let bad = config_text(1, 4, "bad");
    let mut meta = publish_meta(&bad);
    meta.services = digests(&bad, checksum(&bad) ^ 0xdead);
    publisher.publish(&bad, meta).await.unwrap();
    f.wait_for("rejection", T, |s| s.rejected.is_some()).await;
    let st = f.status();
    assert_eq!(st.current_version, Some(2));
    assert_eq!(st.applied_version(), Some(1), "keeps the last good version");
    assert!(!st.in_sync());
    let r = st.rejected.unwrap();
    assert_eq!(r.version, 2);
    assert!(r.error.contains("computed checksum"), "{}", r.error);
    // Persisted state stays the last good one.
    assert_eq!(cluster::state::load(&state).unwrap().unwrap().text, good);

    // A good version is taken again and clears the rejection.
    let v3 = config_text(1, 5, "v3");
    publisher.publish(&v3, publish_meta(&v3)).await.unwrap();
    f.wait_for("v3", T, |s| {
        s.applied_version() == Some(3) && s.rejected.is_none()
    })
    .await;

    // Damaged in Consul (a chunk overwritten behind our back): rollback to it is refused, and
    // a director that is pointed at it anyway refuses it.
    let raw = Consul::new(&agent.config("xdplb/t5", &state)).unwrap();
    assert!(raw
        .write("xdplb/t5/versions/1/chunk/0", b"evil".to_vec(), None)
        .await
        .unwrap());
    assert!(matches!(
        publisher.set_current(1, Expect::Any).await,
        Err(Error::Integrity { version: 1, .. })
    ));
    assert_eq!(publisher.current().await.unwrap(), Some(3));
    raw.write("xdplb/t5/current", b"1".to_vec(), None)
        .await
        .unwrap();
    f.wait_for("damaged version refused", T, |s| {
        s.rejected.as_ref().is_some_and(|r| r.version == 1)
    })
    .await;
    let st = f.status();
    assert_eq!(st.applied_version(), Some(3));
    let err = st.rejected.unwrap().error;
    assert!(err.contains("does not match its meta"), "{err}");
    assert_eq!(
        f.applied
            .lock()
            .unwrap()
            .iter()
            .map(|(v, _)| *v)
            .collect::<Vec<_>>(),
        [1, 3]
    );
    f.stop().await;
}

/// 4096 backends per service in two services (~700 KB of text) round-trip through chunks and
/// are applied by a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_config_round_trips_through_chunks() {
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = store(&agent, "xdplb/t6", &dir.path().join("p"), T);
    let state = dir.path().join("d/state.json");
    let f = spawn_follower(store(&agent, "xdplb/t6", &state, T), &state, 0);
    let text = config_text(2, 4096, "big");
    assert!(text.len() > 2 * CHUNK_SIZE, "{} bytes", text.len());
    let m = s.publish(&text, publish_meta(&text)).await.unwrap();
    assert_eq!(m.chunks as usize, text.len().div_ceil(CHUNK_SIZE));
    assert_eq!(m.size as usize, text.len());
    assert_eq!(s.get(m.version).await.unwrap().text, text);
    f.wait_for("big version", T, |st| {
        st.applied_version() == Some(m.version)
    })
    .await;
    assert_eq!(f.applied.lock().unwrap()[0].1, text);
    f.stop().await;
}

/// Kill Consul while directors follow it, change nothing, restart it: directors keep their
/// version meanwhile, reconnect by themselves and catch up with a version published after the
/// restart. (A one-node server with a data dir, so the KV store survives the restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_survive_consul_restart() {
    init_tracing();
    let mut agent = ConsulAgent::server().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let publisher = store(&agent, "xdplb/t7", &dir.path().join("p"), T);
    let followers: Vec<Running> = (0..2)
        .map(|i| {
            let state = dir.path().join(format!("d{i}/state.json"));
            spawn_follower(store(&agent, "xdplb/t7", &state, T), &state, 0)
        })
        .collect();
    let v1 = config_text(1, 3, "v1");
    publisher.publish(&v1, publish_meta(&v1)).await.unwrap();
    for f in &followers {
        f.wait_for("v1", T, |s| s.in_sync() && s.applied_version() == Some(1))
            .await;
    }

    agent.kill();
    for f in &followers {
        f.wait_for("disconnect", T, |s| !s.connected).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for f in &followers {
        let st = f.status();
        assert_eq!(st.applied_version(), Some(1), "still serving v1");
        assert!(st.last_error.is_some());
        assert_eq!(f.applied.lock().unwrap().len(), 1, "no re-apply while down");
    }

    agent.restart().unwrap();
    let v2 = config_text(1, 4, "v2");
    let m = publisher.publish(&v2, publish_meta(&v2)).await.unwrap();
    assert_eq!(m.version, 2, "the store survived the restart");
    for f in &followers {
        f.wait_for("v2 after restart", T, |s| {
            s.in_sync() && s.applied_version() == Some(2)
        })
        .await;
        assert_eq!(f.applied.lock().unwrap().len(), 2);
    }
    for f in followers {
        f.stop().await;
    }
}

/// A dev agent restarts empty: followers keep serving, and a republished version (which may
/// reuse a number with other content) is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_survive_consul_losing_its_data() {
    init_tracing();
    let mut agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let publisher = store(&agent, "xdplb/t8", &dir.path().join("p"), T);
    let state = dir.path().join("d/state.json");
    let f = spawn_follower(store(&agent, "xdplb/t8", &state, T), &state, 0);
    let old = config_text(1, 3, "before");
    publisher.publish(&old, publish_meta(&old)).await.unwrap();
    f.wait_for("v1", T, |s| s.applied_version() == Some(1))
        .await;

    agent.restart().unwrap();
    f.wait_for("empty consul seen", T, |s| {
        s.connected && s.current_version.is_none()
    })
    .await;
    assert_eq!(f.status().applied_version(), Some(1), "keeps serving");

    let new = config_text(1, 4, "after");
    let m = publisher.publish(&new, publish_meta(&new)).await.unwrap();
    assert_eq!(m.version, 1, "a fresh store numbers from 1 again");
    f.wait_for("republished v1", T, |s| {
        s.applied
            .as_ref()
            .is_some_and(|a| a.meta.sha256 == m.sha256)
    })
    .await;
    assert_eq!(f.applied.lock().unwrap().last().unwrap().1, new);
    f.stop().await;
}

/// A director that starts while Consul is down serves its persisted version, then catches up
/// once Consul is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_starting_without_consul_serves_persisted_version() {
    init_tracing();
    let mut agent = ConsulAgent::server().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("d/state.json");
    let publisher = store(&agent, "xdplb/t9", &dir.path().join("p"), T);
    let v1 = config_text(1, 3, "v1");
    publisher.publish(&v1, publish_meta(&v1)).await.unwrap();
    let first = spawn_follower(store(&agent, "xdplb/t9", &state, T), &state, 0);
    first
        .wait_for("v1", T, |s| s.applied_version() == Some(1))
        .await;
    first.stop().await;

    agent.kill();
    let second = spawn_follower(store(&agent, "xdplb/t9", &state, T), &state, 0);
    second
        .wait_for("persisted v1", T, |s| {
            s.applied_version() == Some(1) && !s.connected && s.last_error.is_some()
        })
        .await;
    assert_eq!(second.status().applied.unwrap().source, Source::StateFile);
    assert_eq!(second.applied.lock().unwrap()[0].1, v1);

    agent.restart().unwrap();
    let v2 = config_text(1, 4, "v2");
    publisher.publish(&v2, publish_meta(&v2)).await.unwrap();
    second
        .wait_for("v2", T, |s| s.in_sync() && s.applied_version() == Some(2))
        .await;
    second.stop().await;
}

/// An idle follower only holds blocking queries open: one request per wait period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_follower_only_blocks() {
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let publisher = store(&agent, "xdplb/t10", &dir.path().join("p"), T);
    let v1 = config_text(1, 3, "v1");
    publisher.publish(&v1, publish_meta(&v1)).await.unwrap();
    let state = dir.path().join("d/state.json");
    let wait = Duration::from_secs(1);
    let s = store(&agent, "xdplb/t10", &state, wait);
    let f = spawn_follower(s.clone(), &state, 0);
    f.wait_for("v1", T, |st| st.in_sync()).await;

    let before = s.requests();
    let idle = Duration::from_secs(4);
    tokio::time::sleep(idle).await;
    let made = s.requests() - before;
    // One blocking query per `wait` (plus Consul's up-to-wait/16 jitter): 4 or 5, never a loop.
    eprintln!("idle follower: {made} requests in {idle:?} with wait {wait:?}");
    assert!(
        (3..=6).contains(&made),
        "{made} requests in {idle:?}: expected ~one per {wait:?}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_prefix_store_and_unreachable_consul() {
    init_tracing();
    // Nothing listens there: every call fails fast with a transient error.
    let cfg = cluster::ConsulSection {
        address: "http://127.0.0.1:1".into(),
        datacenter: None,
        token: None,
        token_file: None,
        ca_file: None,
        prefix: "xdplb/none".into(),
        state_file: None,
    }
    .validate()
    .unwrap();
    let s = Store::new(&cfg).unwrap();
    match s.current().await {
        Err(Error::Consul(e)) => assert!(e.is_transient(), "{e}"),
        other => panic!("{other:?}"),
    }
    let e = s.publish("x", PublishMeta::default()).await.unwrap_err();
    assert!(matches!(e, Error::Consul(_)), "{e}");
    let _ = Arc::new(s);
}

/// HTTPS with the configured CA file, and ACLs: the token is sent on every call (consulrs's
/// and the direct blocking read), a missing token is refused, and a follower reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_ca_file_and_acl_token() {
    init_tracing();
    let agent = ConsulAgent::dev_secure().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", cluster::testing::ROOT_TOKEN)).unwrap();
    let section = |token_file: Option<std::path::PathBuf>, ca: bool, state: &str| {
        let mut cfg = cluster::ConsulSection {
            address: agent.https_address(),
            datacenter: Some("dc1".into()),
            token: None,
            token_file,
            ca_file: ca.then(|| agent.ca_file()),
            prefix: "xdplb/tls".into(),
            state_file: Some(dir.path().join(state)),
        }
        .validate()
        .unwrap();
        cfg.watch_wait = T;
        cfg
    };

    let good = section(Some(token_file.clone()), true, "p");
    let publisher = Store::new(&good).unwrap();
    let t = config_text(1, 3, "tls");
    assert_eq!(
        publisher
            .publish(&t, publish_meta(&t))
            .await
            .unwrap()
            .version,
        1
    );
    let state = dir.path().join("d/state.json");
    let f = spawn_follower(
        Arc::new(Store::new(&section(Some(token_file.clone()), true, "d/state.json")).unwrap()),
        &state,
        0,
    );
    f.wait_for("v1 over https", T, |s| {
        s.in_sync() && s.applied_version() == Some(1)
    })
    .await;
    f.stop().await;

    // No token: ACL default deny.
    let anonymous = Store::new(&section(None, true, "a")).unwrap();
    let e = anonymous.publish(&t, publish_meta(&t)).await.unwrap_err();
    assert!(format!("{e:?}").contains("403"), "{e:?}");
    let state = dir.path().join("a/state.json");
    let f = spawn_follower(Arc::new(anonymous), &state, 0);
    f.wait_for("acl refusal reported", T, |s| {
        !s.connected && s.last_error.as_deref().is_some_and(|e| e.contains("403"))
    })
    .await;
    f.stop().await;

    // Without the CA file the certificate is not trusted.
    let untrusted = Store::new(&section(Some(token_file), false, "u")).unwrap();
    let e = untrusted.current().await.unwrap_err();
    let chain = format!("{e:?}");
    assert!(
        chain.to_lowercase().contains("certificate") || chain.contains("UnknownIssuer"),
        "{chain}"
    );
}

/// A publisher that dies holding the lock blocks others only until its session expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_of_a_dead_publisher_expires() {
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent.config("xdplb/t11", &dir.path().join("s"));
    let raw = Consul::new(&cfg).unwrap();
    // The "dead" publisher: shortest TTL Consul allows, never renewed, never released.
    let session = raw
        .session_create("dead publisher", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(raw
        .acquire("xdplb/t11/lock", &session, b"dead".to_vec())
        .await
        .unwrap());
    let s = Store::new(&cfg).unwrap();
    let t = config_text(1, 3, "after the dead one");
    let started = std::time::Instant::now();
    let m = tokio::time::timeout(Duration::from_secs(60), s.publish(&t, publish_meta(&t)))
        .await
        .expect("the lock frees when the session expires")
        .unwrap();
    assert_eq!(m.version, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "published after {:?}: did not wait for the lock",
        started.elapsed()
    );
    eprintln!("dead publisher's lock freed after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_created_once_renewed_and_ends_as_asked() {
    use cluster::{OnEnd, Session};
    init_tracing();
    let agent = ConsulAgent::dev().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent.config("xdplb/t12", &dir.path().join("s"));
    let raw = Consul::new(&cfg).unwrap();
    let ttl = Duration::from_secs(10);

    // Release: the lock is freed, the key stays.
    let mut lock = Session::new("lock holder", ttl, OnEnd::Release);
    assert!(!lock.renew(&raw).await.unwrap(), "no session yet");
    let id = lock.ensure(&raw).await.unwrap();
    assert_eq!(lock.ensure(&raw).await.unwrap(), id, "created once");
    assert!(lock.renew(&raw).await.unwrap());
    assert!(raw
        .acquire("xdplb/t12/lock", &id, b"me".to_vec())
        .await
        .unwrap());
    assert_eq!(lock.destroy(&raw).await.unwrap(), Some(id.clone()));
    assert_eq!(lock.id(), None);
    let (entry, _) = raw.read("xdplb/t12/lock", None).await.unwrap();
    let entry = entry.expect("a released lock keeps its key");
    assert_eq!(entry.session, None);

    // Consul forgot the session (destroyed behind the holder's back, as an expiry does): renew
    // says so and the next use starts a new one.
    let id2 = lock.ensure(&raw).await.unwrap();
    assert_ne!(id2, id);
    raw.session_destroy(&id2).await.unwrap();
    assert!(!lock.renew(&raw).await.unwrap());
    assert_eq!(lock.id(), None);
    assert_ne!(lock.ensure(&raw).await.unwrap(), id2);

    // Delete: the session's keys go with it.
    let mut view = Session::new("view writer", ttl, OnEnd::Delete);
    let id = view.ensure(&raw).await.unwrap();
    assert!(raw
        .acquire("xdplb/t12/view", &id, b"view".to_vec())
        .await
        .unwrap());
    view.destroy(&raw).await.unwrap();
    let (entry, _) = raw.read("xdplb/t12/view", None).await.unwrap();
    assert!(entry.is_none(), "{entry:?}");
}
