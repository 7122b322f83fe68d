//! Delta, NACKs, shared diffs, unknown types.

use super::*;

#[test]
fn delta_initial_wildcard_requests_get_full_set() {
    let mut h = Harness::new(XdsApi::Delta);
    let snap = mk_snapshot(&[(CDS, &[("b", "1"), ("a", "1")])]);
    h.snapshot(&snap);
    let r = one(h.delta(delta_req(CDS, &[], &[], "")));
    assert_eq!(delta_names(&r), ["a", "b"]);
    assert!(delta(&r).removed_resources.is_empty());
    assert_eq!(delta(&r).resources[0].version, res_version("a", "1"));
    assert_eq!(delta(&r).system_version_info, version(&snap, CDS));

    // Explicit "*", and an empty set answered once.
    let r = one(h.delta(delta_req(LDS, &["*"], &[], "")));
    assert!(delta(&r).resources.is_empty());
    assert!(h.delta_ack(&r).is_empty());
    assert_eq!(h.state(LDS), SyncState::Synced);
    assert!(h.snapshot(&snap).is_empty());
}

#[test]
fn delta_request_before_first_snapshot_is_answered_when_it_arrives() {
    let mut h = Harness::new(XdsApi::Delta);
    assert!(h.delta(delta_req(LDS, &[], &[], "")).is_empty());
    assert!(h.delta(delta_req(EDS, &["a"], &[], "")).is_empty());
    let out = h.snapshot(&mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]));
    assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [EDS, LDS]);
    assert_eq!(delta_names(&out[0]), ["a"]);
    assert!(delta(&out[1]).resources.is_empty());
}

#[test]
fn delta_ack_and_stale_nonce() {
    let mut h = Harness::new(XdsApi::Delta);
    let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
    h.snapshot(&snap);
    let r1 = one(h.delta(delta_req(EDS, &["a"], &[], "")));
    assert!(h.delta_ack(&r1).is_empty());
    assert_eq!(h.state(EDS), SyncState::Synced);
    assert_eq!(h.status(EDS).acked_version.as_deref(), Some(version(&snap, EDS).as_str()));
    assert_eq!(h.status(EDS).resource_count, 1);

    let snap2 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "1"), ("c", "1")])]);
    let r2 = one(h.snapshot(&snap2));
    assert_eq!(delta_names(&r2), ["a"]);

    // A stale nonce: no ACK, but the subscription change is applied.
    let r3 = one(h.delta(delta_req(EDS, &["b"], &[], "bogus")));
    assert_eq!(delta_names(&r3), ["b"]);
    assert_eq!(h.stat(|s| &s.stale_nonces), 1);
    assert_eq!(h.status(EDS).acked_version.as_deref(), Some(version(&snap, EDS).as_str()));
    assert!(h.delta_ack(&r3).is_empty());
    assert_eq!(h.state(EDS), SyncState::Synced);
    assert_eq!(h.status(EDS).resource_count, 2);
}

#[test]
fn delta_nack_is_recorded_and_not_answered_until_a_fix() {
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")])]));
    let r = one(h.delta(delta_req(CDS, &[], &[], "")));
    h.delta_ack(&r);

    let bad = mk_snapshot(&[(CDS, &[("a", "bad"), ("b", "1")])]);
    let r = one(h.snapshot(&bad));
    assert_eq!(delta_names(&r), ["a"]);
    assert!(h.delta(delta_nack(CDS, r.nonce(), "bad a")).is_empty());
    let n = h.status(CDS).last_nack.expect("NACK recorded");
    assert_eq!((n.message.as_str(), n.rejected_version), ("bad a", version(&bad, CDS)));
    assert_eq!(h.state(CDS), SyncState::Nacked);
    assert!(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "bad"), ("b", "1")])])).is_empty());

    // What the proxy holds after a NACK is unknown (it may have kept part of the
    // update): the fix carries the whole set.
    let r = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "good"), ("b", "1")])])));
    assert_eq!(delta_names(&r), ["a", "b"]);
    assert_eq!(delta(&r).resources[0].version, res_version("a", "good"));
    assert_eq!(h.state(CDS), SyncState::Nacked, "NACKED until the complete update is acknowledged");
    h.delta_ack(&r);
    assert_eq!(h.status(CDS).last_nack, None);
    assert_eq!(h.state(CDS), SyncState::Synced);
}

#[test]
fn sotw_nack_then_complete_resend_of_a_named_type() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]));
    let r = one(h.sotw(sotw_req(EDS, &["a", "b"], "", "")));
    h.sotw_ack(&r, &["a", "b"]);
    let bad = mk_snapshot(&[(EDS, &[("a", "bad"), ("b", "1")])]);
    let r = one(h.snapshot(&bad));
    assert_eq!(sotw_bodies(&r), ["a:bad"]);
    let v1 = h.status(EDS).acked_version.unwrap();
    assert!(h.sotw(nack(EDS, &["a", "b"], &v1, r.nonce(), "bad a")).is_empty());
    assert_eq!(h.state(EDS), SyncState::Nacked);
    let r = one(h.snapshot(&mk_snapshot(&[(EDS, &[("a", "good"), ("b", "1")])])));
    assert_eq!(sotw_bodies(&r), ["a:good", "b:1"], "the whole subscribed set, not only what changed");
    h.sotw_ack(&r, &["a", "b"]);
    assert_eq!(h.state(EDS), SyncState::Synced);
}

#[test]
fn delta_nack_of_an_earlier_response_in_flight_is_recorded() {
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")])]));
    let r = one(h.delta(delta_req(CDS, &[], &[], "")));
    h.delta_ack(&r);
    // Two updates go out before the proxy answers the first.
    let bad = mk_snapshot(&[(CDS, &[("a", "bad")])]);
    let first = one(h.snapshot(&bad));
    let second = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "bad"), ("b", "1")])])));
    assert!(h.delta(delta_nack(CDS, first.nonce(), "bad a")).is_empty());
    let n = h.status(CDS).last_nack.expect("NACK of the earlier response recorded");
    assert_eq!((n.message.as_str(), n.rejected_version), ("bad a", version(&bad, CDS)));
    // The second response was computed as if the first had been applied: its ACK
    // does not say what the proxy holds, so the whole set goes again at once.
    let r = one(h.delta_ack(&second));
    assert_eq!(delta_names(&r), ["a", "b"]);
    assert_eq!(h.state(CDS), SyncState::Nacked);
    h.delta_ack(&r);
    assert_eq!(h.state(CDS), SyncState::Synced);
    let r = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "good"), ("b", "1")])])));
    assert_eq!(delta_names(&r), ["a"]);
    h.delta_ack(&r);
    assert_eq!(h.state(CDS), SyncState::Synced);
}

#[test]
fn proxies_in_the_same_position_share_one_diff() {
    let mut a = Harness::new(XdsApi::Delta);
    let conn_b = a.registry.register("node-2".into(), XdsApi::Delta, None);
    let mut b = Session::new(XdsApi::Delta, conn_b.status.clone(), a.registry.clone());
    let snap = mk_snapshot(&[(EDS, &[("x", "1"), ("y", "1")])]);
    a.snapshot(&snap);
    b.on_snapshot(snap.clone());
    for session in [&mut a.session, &mut b] {
        let r = one(session.on_delta_request(delta_req(EDS, &["x", "y"], &[], "")));
        session.on_delta_request(delta_req(EDS, &[], &[], r.nonce()));
    }
    let snap2 = mk_snapshot(&[(EDS, &[("x", "2"), ("y", "1")])]);
    let ra = one(a.snapshot(&snap2));
    let rb = one(b.on_snapshot(snap2.clone()));
    assert_eq!(delta_names(&ra), ["x"]);
    assert_eq!(delta(&ra).resources, delta(&rb).resources);
    let cached = crate::sync::lock(&a.registry.diff_cache().entries).len();
    assert_eq!(cached, 1, "one diff computed for both proxies");
}

#[test]
fn delta_only_changed_resources_and_removals() {
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&mk_snapshot(&[
        (CDS, &[("a", "1"), ("b", "1"), ("c", "1")]),
        (EDS, &[("a", "1"), ("b", "1"), ("c", "1")]),
    ]));
    let r = one(h.delta(delta_req(CDS, &[], &[], "")));
    h.delta_ack(&r);
    let r = one(h.delta(delta_req(EDS, &["a", "b"], &[], "")));
    assert_eq!(delta_names(&r), ["a", "b"]);
    h.delta_ack(&r);

    let snap2 =
        mk_snapshot(&[(CDS, &[("a", "1"), ("b", "2"), ("d", "1")]), (EDS, &[("a", "2"), ("b", "1"), ("c", "2")])]);
    let out = h.snapshot(&snap2);
    assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, EDS]);
    assert_eq!(delta_names(&out[0]), ["b", "d"]);
    assert_eq!(delta_removed(&out[0]), ["c"]);
    assert_eq!(delta_names(&out[1]), ["a"]);
    assert!(delta(&out[1]).removed_resources.is_empty());
    assert_eq!(h.status(CDS).resource_count, 3);
}

#[test]
fn delta_subscribe_and_unsubscribe() {
    let mut h = Harness::new(XdsApi::Delta);
    let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]);
    h.snapshot(&snap);
    let r = one(h.delta(delta_req(EDS, &["a"], &[], "")));
    h.delta_ack(&r);

    // Subscribe b: only b.
    let r = one(h.delta(delta_req(EDS, &["b"], &[], r.nonce())));
    assert_eq!(delta_names(&r), ["b"]);
    h.delta_ack(&r);

    // Unsubscribe a: no answer needed; later changes to a are not sent.
    assert!(h.delta(delta_req(EDS, &[], &["a"], r.nonce())).is_empty());
    assert!(h.snapshot(&mk_snapshot(&[(EDS, &[("a", "2"), ("b", "1")])])).is_empty());

    // Re-subscribing sends it again, even when unchanged since Envoy last had it.
    let snap3 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]);
    assert!(h.snapshot(&snap3).is_empty());
    let r = one(h.delta(delta_req(EDS, &["a"], &[], "")));
    assert_eq!(delta_names(&r), ["a"]);
    h.delta_ack(&r);

    // A name that does not exist is reported removed, so Envoy stops waiting for it.
    let r = one(h.delta(delta_req(EDS, &["missing"], &[], "")));
    assert!(delta(&r).resources.is_empty());
    assert_eq!(delta_removed(&r), ["missing"]);
    h.delta_ack(&r);
    // When it appears, it is sent.
    let r = one(h.snapshot(&mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("missing", "1")])])));
    assert_eq!(delta_names(&r), ["missing"]);

    h.delta_ack(&r);

    // Subscribing and unsubscribing in one request; re-subscribing to a name still
    // subscribed is not a change.
    assert!(h.delta(delta_req(EDS, &["a"], &["b"], "")).is_empty());
    let r = one(h.delta(delta_req(EDS, &["b", "a"], &["missing"], "")));
    assert_eq!(delta_names(&r), ["b"]);
    assert!(delta(&r).removed_resources.is_empty());
}

#[test]
fn delta_reconnect_with_initial_resource_versions() {
    let snap = mk_snapshot(&[
        (CDS, &[("a", "1"), ("b", "2"), ("c", "1")]),
        (RDS, &[("a", "1"), ("b", "2"), ("c", "1")]),
        (EDS, &[("a", "1")]),
    ]);
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&snap);
    let mut req = delta_req(CDS, &[], &[], "");
    req.initial_resource_versions = [
        ("a".to_owned(), res_version("a", "1")),
        ("b".to_owned(), res_version("b", "1")),
        ("gone".to_owned(), res_version("gone", "1")),
    ]
    .into();
    let r = one(h.delta(req));
    assert_eq!(delta_names(&r), ["b", "c"]);
    assert_eq!(delta_removed(&r), ["gone"]);

    let mut req = delta_req(RDS, &["a", "b", "c"], &[], "");
    req.initial_resource_versions =
        [("a".to_owned(), res_version("a", "1")), ("b".to_owned(), res_version("b", "1"))].into();
    let r = one(h.delta(req));
    assert_eq!(delta_names(&r), ["b", "c"]);
    assert!(delta(&r).removed_resources.is_empty());
    h.delta_ack(&r);
    assert_eq!(h.state(RDS), SyncState::Synced);

    // Endpoints are sent again whatever version the proxy quotes: a cluster may be
    // warming for them.
    let mut req = delta_req(EDS, &["a"], &[], "");
    req.initial_resource_versions = [("a".to_owned(), res_version("a", "1"))].into();
    assert_eq!(delta_names(&one(h.delta(req))), ["a"]);

    // The proxy has everything already: nothing re-sent.
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&snap);
    let mut req = delta_req(RDS, &["a"], &[], "");
    req.initial_resource_versions = [("a".to_owned(), res_version("a", "1"))].into();
    let out = h.delta(req);
    assert!(out.iter().all(|r| delta(r).resources.is_empty() && delta(r).removed_resources.is_empty()));
}

#[test]
fn delta_make_before_break() {
    let mut h = Harness::new(XdsApi::Delta);
    let (before, after) = mbb_snapshots();
    h.snapshot(&before);
    for (ty, names) in [(CDS, &[][..]), (LDS, &[]), (RDS, &["r"])] {
        let r = one(h.delta(delta_req(ty, names, &[], "")));
        assert!(h.delta_ack(&r).is_empty());
    }

    let out = h.snapshot(&after);
    assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, LDS, RDS]);
    assert_eq!(delta_names(&out[0]), ["a"]);
    assert!(delta(&out[0]).removed_resources.is_empty(), "b removed before routes stop using it");
    assert!(h.delta_ack(&out[0]).is_empty());
    assert!(h.delta_ack(&out[1]).is_empty());
    // A NACK of the routes keeps b.
    assert!(h.delta(delta_nack(RDS, out[2].nonce(), "bad")).is_empty());
    let fixed = mk_snapshot(&[(CDS, &[("a", "2")]), (LDS, &[("l", "2")]), (RDS, &[("r", "fixed")])]);
    let r = one(h.snapshot(&fixed));
    assert_eq!(ty_of(&r), RDS);
    let r = one(h.delta_ack(&r));
    assert_eq!(ty_of(&r), CDS);
    assert!(delta(&r).resources.is_empty());
    assert_eq!(delta_removed(&r), ["b"]);
    h.delta_ack(&r);
    assert_eq!(h.state(CDS), SyncState::Synced);
}

#[test]
fn sotw_requests_for_unknown_types_get_an_empty_answer_once() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")])]));
    let url = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
    let mut req = sotw_req(CDS, &[], "", "");
    req.type_url = url.into();
    let r = one(h.sotw(req.clone()));
    assert_eq!((sotw(&r).type_url.as_str(), sotw(&r).resources.len()), (url, 0));
    // Its ACK is not answered again; a new request (another stream's nonce) is.
    req.response_nonce = r.nonce().to_owned();
    assert!(h.sotw(req.clone()).is_empty());
    req.response_nonce = "elsewhere".into();
    assert_eq!(one(h.sotw(req)).type_url(), url);
    assert!(h.conn.status.types().is_empty());

    let mut h = Harness::new(XdsApi::Delta);
    let mut req = delta_req(CDS, &[], &[], "");
    req.type_url = url.into();
    assert!(h.delta(req).is_empty(), "delta requests for unknown types are ignored");
}

#[test]
fn acks_of_unknown_types_beyond_those_remembered_are_not_answered_again() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")])]));
    for i in 0..40 {
        let mut req = sotw_req(CDS, &[], "", "");
        req.type_url = format!("type.googleapis.com/example.Unknown{i}");
        let r = one(h.sotw(req.clone()));
        // The ACK of the empty answer, remembered or not, ends the exchange: answering it
        // again would loop with a proxy that ACKs every answer.
        req.response_nonce = r.nonce().to_owned();
        assert!(h.sotw(req).is_empty(), "unknown type {i}: its ACK was answered again");
    }
}

/// proxy-status's RESOURCES column and proxy-config's rows describe the same thing: a
/// name the proxy unsubscribes from is neither listed nor counted.
#[test]
fn delta_resource_count_follows_an_unsubscribe() {
    let mut h = Harness::new(XdsApi::Delta);
    let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
    h.snapshot(&snap);
    let r = one(h.delta(delta_req(EDS, &["a", "b"], &[], "")));
    h.delta_ack(&r);
    assert_eq!(h.status(EDS).resource_count, 2);
    h.delta(delta_req(EDS, &[], &["b"], ""));
    let status = h.status(EDS);
    assert_eq!(status.sent_resources().count(), 1);
    assert_eq!(status.resource_count, 1, "counted as listed");
}
