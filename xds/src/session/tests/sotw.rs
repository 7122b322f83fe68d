//! State of the world.

use super::*;

#[test]
fn sotw_initial_wildcard_requests_get_full_set() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[(CDS, &[("b", "1"), ("a", "1")]), (LDS, &[("l", "1")])]);
    assert!(h.snapshot(&snap).is_empty(), "nothing subscribed yet");

    let r = one(h.sotw(sotw_req(CDS, &[], "", "")));
    assert_eq!(ty_of(&r), CDS);
    assert_eq!(sotw_names(&r), ["a", "b"]);
    assert_eq!(sotw(&r).version_info, version(&snap, CDS));
    assert!(!r.nonce().is_empty());

    let r = one(h.sotw(sotw_req(LDS, &[], "", "")));
    assert_eq!(sotw_bodies(&r), ["l:1"]);

    // "*" is a wildcard too.
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&snap);
    assert_eq!(sotw_names(&one(h.sotw(sotw_req(CDS, &["*"], "", "")))), ["a", "b"]);
}

#[test]
fn sotw_empty_set_is_answered_once() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[]);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(CDS, &[], "", "")));
    assert!(sotw(&r).resources.is_empty());
    assert_eq!(sotw(&r).version_info, "empty");
    assert!(h.sotw_ack(&r, &[]).is_empty());
    assert_eq!(h.state(CDS), SyncState::Synced);
    // Still empty: nothing more to say.
    assert!(h.snapshot(&mk_snapshot(&[])).is_empty());

    // A named type whose resources do not exist is answered once as well.
    let r = one(h.sotw(sotw_req(EDS, &["missing"], "", "")));
    assert!(sotw(&r).resources.is_empty());
    assert!(h.sotw_ack(&r, &["missing"]).is_empty());
    assert!(h.snapshot(&mk_snapshot(&[(EDS, &[("other", "1")])])).is_empty());
}

#[test]
fn sotw_request_before_first_snapshot_is_answered_when_it_arrives() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    assert!(h.sotw(sotw_req(CDS, &[], "", "")).is_empty());
    assert!(h.sotw(sotw_req(LDS, &[], "", "")).is_empty());
    assert_eq!(h.state(CDS), SyncState::NotSent);

    let snap = mk_snapshot(&[(CDS, &[("a", "1")])]);
    let out = h.snapshot(&snap);
    assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, LDS]);
    assert_eq!(sotw_names(&out[0]), ["a"]);
    // The empty LDS set is still answered so that Envoy can finish initializing.
    assert!(sotw(&out[1]).resources.is_empty());
    assert_ne!(out[0].nonce(), out[1].nonce());
}

#[test]
fn sotw_ack_is_recorded() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")])]);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(CDS, &[], "", "")));
    let st = h.status(CDS);
    assert_eq!(st.sent_version.as_deref(), Some(version(&snap, CDS).as_str()));
    assert_eq!(st.sent_nonce.as_deref(), Some(r.nonce()));
    assert_eq!(st.resource_count, 2);
    assert_eq!(st.acked_version, None);
    assert_eq!(h.state(CDS), SyncState::Stale);

    assert!(h.sotw_ack(&r, &[]).is_empty());
    let st = h.status(CDS);
    assert_eq!(st.acked_version.as_deref(), Some(version(&snap, CDS).as_str()));
    assert!(st.acked_at_ms.is_some());
    assert_eq!(st.desired_version, st.sent_version);
    assert_eq!(st.sync_state(), SyncState::Synced);
    assert_eq!(h.state(CDS), SyncState::Synced);
    assert_eq!(h.stat(|s| &s.acks), 1);
    assert_eq!(h.stat(|s| &s.responses_sent), 1);
    assert_eq!(h.stat(|s| &s.resources_sent), 2);

    // A duplicate of the same ACK is neither a second ACK nor a reason to answer.
    assert!(h.sotw_ack(&r, &[]).is_empty());
    assert_eq!(h.stat(|s| &s.acks), 1);

    // A new snapshot: STALE until acknowledged again.
    let snap2 = mk_snapshot(&[(CDS, &[("a", "2"), ("b", "1")])]);
    let r2 = one(h.snapshot(&snap2));
    assert_eq!(h.state(CDS), SyncState::Stale);
    h.sotw_ack(&r2, &[]);
    assert_eq!(h.state(CDS), SyncState::Synced);
    assert_eq!(h.status(CDS).acked_version.as_deref(), Some(version(&snap2, CDS).as_str()));
}

#[test]
fn sotw_stale_nonce_is_ignored() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap1 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]);
    h.snapshot(&snap1);
    let r1 = one(h.sotw(sotw_req(EDS, &["a"], "", "")));
    let snap2 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "1")])]);
    let r2 = one(h.snapshot(&snap2));

    // The ACK of r1 arrives after r2 was sent: recorded, not answered (the answer to
    // r2 will be), though the names it lists are kept.
    assert!(h.sotw(sotw_req(EDS, &["a", "b"], &sotw(&r1).version_info, r1.nonce())).is_empty());
    assert_eq!(h.stat(|s| &s.acks), 1);
    assert_eq!(h.status(EDS).acked_version, None, "not the latest response");
    let r = one(h.sotw_ack(&r2, &["a", "b"]));
    assert_eq!(sotw_bodies(&r), ["b:1"]);
    let r2 = r;
    // An unknown nonce too.
    assert!(h.sotw(nack(EDS, &["a", "b"], "", "bogus", "nope")).is_empty());
    assert_eq!(h.stat(|s| &s.stale_nonces), 1);
    assert_eq!(h.status(EDS).last_nack, None);

    // The answer to the latest response still counts.
    assert!(h.sotw_ack(&r2, &["a", "b"]).is_empty());
    assert_eq!(h.state(EDS), SyncState::Synced);
}

#[test]
fn sotw_nack_is_recorded_and_not_answered_until_a_fix() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let good = mk_snapshot(&[(CDS, &[("a", "1")])]);
    h.snapshot(&good);
    let r1 = one(h.sotw(sotw_req(CDS, &[], "", "")));
    h.sotw_ack(&r1, &[]);

    let bad = mk_snapshot(&[(CDS, &[("a", "bad")])]);
    let r2 = one(h.snapshot(&bad));
    // Envoy NACKs with the version it still has.
    let out = h.sotw(nack(CDS, &[], &sotw(&r1).version_info, r2.nonce(), "invalid cluster a"));
    assert!(out.is_empty(), "a NACK must not be answered with the same content");
    let st = h.status(CDS);
    let n = st.last_nack.clone().expect("NACK recorded");
    assert_eq!(n.message, "invalid cluster a");
    assert_eq!(n.rejected_version, version(&bad, CDS));
    assert_eq!(n.nonce, r2.nonce());
    assert_eq!(st.acked_version.as_deref(), Some(version(&good, CDS).as_str()));
    assert_eq!(h.state(CDS), SyncState::Nacked);
    assert_eq!(h.stat(|s| &s.nacks), 1);

    // The same content again (a new snapshot object) is not re-sent.
    let bad_again = mk_snapshot(&[(CDS, &[("a", "bad")]), (LDS, &[("l", "1")])]);
    assert!(h.snapshot(&bad_again).is_empty());
    assert_eq!(h.state(CDS), SyncState::Nacked);

    // A fix is sent, and its ACK clears the NACK.
    let fixed = mk_snapshot(&[(CDS, &[("a", "fixed")])]);
    let r3 = one(h.snapshot(&fixed));
    assert_eq!(sotw_bodies(&r3), ["a:fixed"]);
    assert_eq!(h.state(CDS), SyncState::Nacked);
    assert!(h.sotw_ack(&r3, &[]).is_empty());
    assert_eq!(h.status(CDS).last_nack, None);
    assert_eq!(h.state(CDS), SyncState::Synced);
}

#[test]
fn sotw_named_type_gets_only_changed_resources() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap1 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
    h.snapshot(&snap1);
    let r = one(h.sotw(sotw_req(EDS, &["a", "b"], "", "")));
    assert_eq!(sotw_bodies(&r), ["a:1", "b:1"]);
    h.sotw_ack(&r, &["a", "b"]);

    let snap2 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "2"), ("c", "1")])]);
    let r = one(h.snapshot(&snap2));
    assert_eq!(sotw_bodies(&r), ["b:2"]);
    assert_eq!(sotw(&r).version_info, version(&snap2, EDS));
    h.sotw_ack(&r, &["a", "b"]);
    assert_eq!(h.state(EDS), SyncState::Synced);

    // A change to a resource the proxy did not ask for is not sent, and does not
    // make the proxy look out of date.
    let snap3 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "2"), ("c", "2")])]);
    assert!(h.snapshot(&snap3).is_empty());
    assert_eq!(h.state(EDS), SyncState::Synced);
}

#[test]
fn sotw_changed_resource_names_after_ack() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(EDS, &["a"], "", "")));
    assert_eq!(sotw_bodies(&r), ["a:1"]);
    let (v, n) = (sotw(&r).version_info.clone(), r.nonce().to_owned());
    assert!(h.sotw(sotw_req(EDS, &["a"], &v, &n)).is_empty());

    // Envoy learns of cluster b and asks for its endpoints, quoting the nonce it
    // has already acknowledged: that is the latest nonce, not a stale one.
    let r = one(h.sotw(sotw_req(EDS, &["a", "b"], &v, &n)));
    assert_eq!(sotw_bodies(&r), ["b:1"], "newly subscribed names are sent even if unchanged");
    assert_eq!(h.stat(|s| &s.stale_nonces), 0);
    let (v, n) = (sotw(&r).version_info.clone(), r.nonce().to_owned());
    h.sotw(sotw_req(EDS, &["a", "b"], &v, &n));

    // Unsubscribing needs no answer, and changes to the dropped name are not sent.
    assert!(h.sotw(sotw_req(EDS, &["b"], &v, &n)).is_empty());
    let snap2 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "1"), ("c", "1")])]);
    assert!(h.snapshot(&snap2).is_empty());
    let snap3 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "3"), ("c", "1")])]);
    assert_eq!(sotw_bodies(&one(h.snapshot(&snap3))), ["b:3"]);

    // Changing names while a response is in flight (its nonce is the latest).
    let snap4 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "4"), ("c", "1")])]);
    let r = one(h.snapshot(&snap4));
    let r2 = one(h.sotw(sotw_req(EDS, &["b", "c"], &sotw(&r).version_info, r.nonce())));
    assert_eq!(sotw_bodies(&r2), ["c:1"]);
}

#[test]
fn sotw_reconnect_quoting_the_current_version_is_answered() {
    let snap = mk_snapshot(&[(CDS, &[("a", "1")]), (EDS, &[("a", "1"), ("b", "1")])]);
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&snap);
    // The version is that of the last response the proxy accepted; after a NACK it may
    // hold more than that (Envoy keeps the valid part of a rejected update).
    let r = one(h.sotw(sotw_req(CDS, &[], &version(&snap, CDS), "")));
    assert_eq!(sotw_names(&r), ["a"]);
    h.sotw_ack(&r, &[]);
    assert_eq!(h.state(CDS), SyncState::Synced);

    // A named type is answered whatever version it quotes: the version says nothing of
    // names the proxy asks for now and was never sent on this stream.
    let r = one(h.sotw(sotw_req(EDS, &["a", "b"], &version(&snap, EDS), "")));
    assert_eq!(sotw_bodies(&r), ["a:1", "b:1"]);
    assert_eq!(h.state(EDS), SyncState::Stale);
    assert!(h.sotw_ack(&r, &["a", "b"]).is_empty());
    assert_eq!(h.state(EDS), SyncState::Synced);
    assert_eq!(h.status(EDS).resource_count, 2);

    // Later changes are computed against what the proxy has.
    let snap2 = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")]), (EDS, &[("a", "1"), ("b", "2")])]);
    let out = h.snapshot(&snap2);
    assert_eq!(out.len(), 2);
    assert_eq!(sotw_names(&out[0]), ["a", "b"]);
    assert_eq!(sotw_bodies(&out[1]), ["b:2"]);
}

/// The issue's case: a proxy reconnects quoting the current EDS version while asking
/// for a name never sent on this stream (a cluster it has just added); it must get it
/// rather than warm that cluster until its init fetch timeout.
#[test]
fn sotw_reconnect_asking_for_new_eds_names_gets_them() {
    let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("new", "1")])]);
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(EDS, &["a", "new"], &version(&snap, EDS), "7")));
    assert_eq!(sotw_bodies(&r), ["a:1", "new:1"]);
}

#[test]
fn sotw_first_request_with_a_nonce_from_another_stream() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")])]);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(CDS, &[], "old-version", "17")));
    assert_eq!(sotw_names(&r), ["a", "b"]);
    assert!(h.sotw_ack(&r, &[]).is_empty());
    assert_eq!(h.state(CDS), SyncState::Synced);
}

#[test]
fn sotw_cluster_removal_without_route_change_is_immediate() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")]), (LDS, &[("l", "1")])]);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(CDS, &[], "", "")));
    h.sotw_ack(&r, &[]);
    let r = one(h.sotw(sotw_req(LDS, &[], "", "")));
    h.sotw_ack(&r, &[]);
    let r = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")]), (LDS, &[("l", "1")])])));
    assert_eq!(sotw_names(&r), ["a"]);
}

/// Subscribes CDS, LDS (wildcard) and RDS ("r") and ACKs everything for `snap`.
fn sotw_synced_mbb(h: &mut Harness, snap: &Arc<Snapshot>) {
    h.snapshot(snap);
    for (ty, names) in [(CDS, &[][..]), (LDS, &[]), (RDS, &["r"])] {
        let r = one(h.sotw(sotw_req(ty, names, "", "")));
        assert!(h.sotw_ack(&r, names).is_empty());
    }
}

#[test]
fn sotw_make_before_break() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let (before, after) = mbb_snapshots();
    sotw_synced_mbb(&mut h, &before);

    let out = h.snapshot(&after);
    assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, LDS, RDS]);
    // The removed cluster is kept while routes may still point at it.
    assert_eq!(sotw_bodies(&out[0]), ["a:2", "b:1"]);
    assert_ne!(sotw(&out[0]).version_info, version(&after, CDS));
    assert_eq!(sotw_bodies(&out[1]), ["l:2"]);
    assert_eq!(sotw_bodies(&out[2]), ["r:to-a"]);

    assert!(h.sotw_ack(&out[0], &[]).is_empty());
    assert_eq!(h.state(CDS), SyncState::Stale, "the proxy has a cluster it should not have");
    assert!(h.sotw_ack(&out[1], &[]).is_empty(), "routes not yet acknowledged");
    let r = one(h.sotw_ack(&out[2], &["r"]));
    assert_eq!(ty_of(&r), CDS);
    assert_eq!(sotw_bodies(&r), ["a:2"]);
    assert_eq!(sotw(&r).version_info, version(&after, CDS));
    h.sotw_ack(&r, &[]);
    for ty in [CDS, LDS, RDS] {
        assert_eq!(h.state(ty), SyncState::Synced, "{ty}");
    }

    // Routes ACKed before listeners: the removal waits for the listeners.
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    sotw_synced_mbb(&mut h, &before);
    let out = h.snapshot(&after);
    assert!(h.sotw_ack(&out[2], &["r"]).is_empty());
    let r = one(h.sotw_ack(&out[1], &[]));
    assert_eq!(sotw_bodies(&r), ["a:2"]);
}

#[test]
fn sotw_make_before_break_waits_out_a_route_nack() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let (before, after) = mbb_snapshots();
    sotw_synced_mbb(&mut h, &before);
    let out = h.snapshot(&after);
    h.sotw_ack(&out[0], &[]);
    assert!(h.sotw_ack(&out[1], &[]).is_empty());
    // The proxy rejects the new routes and keeps the old ones, which use b.
    let rds = sotw(&out[2]).clone();
    let released = h.sotw(nack(RDS, &["r"], &version(&before, RDS), &rds.nonce, "bad route"));
    assert!(released.is_empty(), "cluster b removed while the proxy's routes still use it: {released:#?}");

    // Fixed routes: sent; once acknowledged, b goes.
    let fixed = mk_snapshot(&[(CDS, &[("a", "2")]), (LDS, &[("l", "2")]), (RDS, &[("r", "to-a-fixed")])]);
    let r = one(h.snapshot(&fixed));
    assert_eq!(ty_of(&r), RDS);
    let r = one(h.sotw_ack(&r, &["r"]));
    assert_eq!(sotw_bodies(&r), ["a:2"]);
}

/// Subscribes to all five types, ACKs the initial responses.
fn all_types_synced(h: &mut Harness, snap: &Arc<Snapshot>) {
    h.snapshot(snap);
    for ty in ResourceType::ALL {
        match h.session.api {
            XdsApi::StateOfTheWorld => {
                let names: &[&str] = if ty.is_wildcard_type() { &[] } else { &["x"] };
                let r = one(h.sotw(sotw_req(ty, names, "", "")));
                h.sotw_ack(&r, names);
            }
            XdsApi::Delta => {
                let names: &[&str] = if ty.is_wildcard_type() { &[] } else { &["x"] };
                let r = one(h.delta(delta_req(ty, names, &[], "")));
                h.delta_ack(&r);
            }
        }
    }
}

fn all_types(content: &str) -> Arc<Snapshot> {
    let r: &[(&str, &str)] = &[("x", content)];
    mk_snapshot(&[(RDS, r), (LDS, r), (EDS, r), (CDS, r), (SDS, r)])
}

#[test]
fn batch_is_ordered_sds_cds_eds_lds_rds() {
    for api in [XdsApi::StateOfTheWorld, XdsApi::Delta] {
        let mut h = Harness::new(api);
        all_types_synced(&mut h, &all_types("1"));
        let out = h.snapshot(&all_types("2"));
        assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [SDS, CDS, EDS, LDS, RDS], "{api:?}");
        let mut nonces: Vec<_> = out.iter().map(|r| r.nonce().to_owned()).collect();
        nonces.dedup();
        assert_eq!(nonces.len(), 5, "every response has its own nonce");
    }
}

#[test]
fn sotw_status_holds_the_shared_set_sent_and_the_subscribed_part() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(EDS, &["a", "b"], "", "")));
    h.sotw_ack(&r, &["a", "b"]);
    let status = h.status(EDS);
    assert!(Arc::ptr_eq(status.sent_set.as_ref().unwrap(), snap.set(EDS)), "the snapshot's set, not a copy");
    let names = |s: &TypeStatus| s.sent_resources().map(|r| r.name().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&status), ["a", "b"]);
    // Dropping a name: the proxy no longer holds it, whether or not anything is sent.
    h.sotw(sotw_req(EDS, &["a"], &version(&snap, EDS), r.nonce()));
    assert_eq!(names(&h.status(EDS)), ["a"]);
    // A new set that changes nothing the proxy subscribes to: the new set is what it holds.
    let next = mk_snapshot(&[(EDS, &[("a", "1"), ("c", "2")])]);
    assert!(h.snapshot(&next).is_empty());
    assert!(Arc::ptr_eq(h.status(EDS).sent_set.as_ref().unwrap(), next.set(EDS)));
}

#[test]
fn sotw_resource_count_follows_a_dropped_name() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(EDS, &["a", "b"], "", "")));
    h.sotw_ack(&r, &["a", "b"]);
    assert_eq!(h.status(EDS).resource_count, 2);
    h.sotw(sotw_req(EDS, &["a"], &version(&snap, EDS), r.nonce()));
    let status = h.status(EDS);
    assert_eq!(status.sent_resources().count(), 1);
    assert_eq!(status.resource_count, 1, "counted as listed");
}
