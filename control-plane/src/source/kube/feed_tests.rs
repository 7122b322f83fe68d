//! Table tests of [`Model`]: watch events in, index changes and problems out.

use serde_json::json;

use super::*;

const PODS: FeedId = FeedId::new(Kind::Pod, Group::Core);
const AMIME_VS: FeedId = FeedId::new(Kind::VirtualService, Group::Amime);
const ISTIO_VS: FeedId = FeedId::new(Kind::VirtualService, Group::Istio);

fn pod(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": "reviews"}, "resourceVersion": "7"},
        "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 9080}]}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn vs(group: Group, name: &str, weight: i64, generation: i64) -> Value {
    json!({
        "apiVersion": format!("{}/v1", group.name()), "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "ns", "generation": generation},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": weight},
                                                        {"destination": {"host": "ratings"}, "weight": 100 - weight}]}]}
    })
}

fn model() -> Model {
    let mut m = Model::new();
    m.add_feed(PODS, "v1", "pods");
    m.add_feed(AMIME_VS, "v1", "virtualservices");
    m.add_feed(ISTIO_VS, "v1", "virtualservices");
    m
}

fn ip_of(index: &Index, name: &str) -> Option<String> {
    index.pods.get(&("ns".to_owned(), name.to_owned())).map(|p| p.ip.unwrap().to_string())
}

fn weight_of(index: &Index, name: &str) -> Option<u32> {
    index.virtual_services.get(&("ns".to_owned(), name.to_owned())).map(|v| v.http[0].route[0].weight)
}

/// (event, changed?, problems changed?)
type Step = (FeedId, WatchEvent, bool, bool);

fn run(model: &mut Model, index: &mut Index, steps: Vec<Step>) {
    for (i, (feed, event, changed, problems)) in steps.into_iter().enumerate() {
        let label = format!("step {i}: {feed} {event:?}");
        let out = model.handle(feed, event, index);
        assert_eq!((out.changed, out.problems), (changed, problems), "{label}");
    }
}

#[test]
fn lists_relists_and_deletes() {
    use WatchEvent::*;
    let (mut m, mut index) = (model(), Index::new());
    assert_eq!(m.pending(), vec![PODS, AMIME_VS, ISTIO_VS]);
    run(
        &mut m,
        &mut index,
        vec![
            (PODS, Init, false, false),
            (PODS, InitApply(pod("a", "10.0.0.1")), true, false),
            (PODS, InitApply(pod("b", "10.0.0.2")), true, false),
            (PODS, InitDone, false, false),
            (PODS, Apply(pod("a", "10.0.0.3")), true, false),
            (PODS, Apply(pod("a", "10.0.0.3")), false, false),
            // A relist that finds the same objects changes nothing...
            (PODS, Init, false, false),
            (PODS, InitApply(pod("a", "10.0.0.3")), false, false),
            (PODS, InitApply(pod("b", "10.0.0.2")), false, false),
            (PODS, InitDone, false, false),
        ],
    );
    assert_eq!(m.pending(), vec![AMIME_VS, ISTIO_VS]);
    // ...one that misses an object deletes it, only at its end.
    run(&mut m, &mut index, vec![(PODS, Init, false, false), (PODS, InitApply(pod("b", "10.0.0.2")), false, false)]);
    assert_eq!(ip_of(&index, "a").as_deref(), Some("10.0.0.3"), "served until the relist is complete");
    run(&mut m, &mut index, vec![(PODS, InitDone, true, false)]);
    assert_eq!(ip_of(&index, "a"), None);
    run(
        &mut m,
        &mut index,
        vec![(PODS, Delete(pod("b", "10.0.0.2")), true, false), (PODS, Delete(pod("b", "10.0.0.2")), false, false)],
    );
    assert!(index.is_empty());
}

#[test]
fn an_invalid_new_version_keeps_the_last_good_one() {
    use WatchEvent::*;
    let (mut m, mut index) = (model(), Index::new());
    run(&mut m, &mut index, vec![(AMIME_VS, Apply(vs(Group::Amime, "r", 100, 1)), true, false)]);
    run(&mut m, &mut index, vec![(AMIME_VS, Apply(vs(Group::Amime, "r", -5, 2)), false, true)]);
    assert_eq!(weight_of(&index, "r"), Some(100), "the last good version stays");
    let problems = m.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "spec.http[0].route[0].weight");
    assert!(problems[0].message.ends_with("its last good state stays in force"), "{}", problems[0].message);
    let targets = m.status_targets();
    assert_eq!(targets[0].tracked.generation, 2);
    assert_eq!(targets[0].problems, problems);
    // Fixed: applied, problem gone. Broken without a good version: nothing in the index.
    run(&mut m, &mut index, vec![(AMIME_VS, Apply(vs(Group::Amime, "r", 90, 3)), true, true)]);
    assert_eq!(weight_of(&index, "r"), Some(90));
    run(&mut m, &mut index, vec![(AMIME_VS, Apply(vs(Group::Amime, "new", -1, 1)), false, true)]);
    assert!(!m.problems()[0].message.contains("last good"));
    assert_eq!(weight_of(&index, "new"), None);
}

#[test]
fn the_amime_group_wins_a_name_collision_and_the_istio_object_is_reported() {
    use WatchEvent::*;
    let (mut m, mut index) = (model(), Index::new());
    run(&mut m, &mut index, vec![(ISTIO_VS, Apply(vs(Group::Istio, "r", 10, 1)), true, false)]);
    assert_eq!(weight_of(&index, "r"), Some(10));
    run(&mut m, &mut index, vec![(AMIME_VS, Apply(vs(Group::Amime, "r", 20, 1)), true, true)]);
    assert_eq!(weight_of(&index, "r"), Some(20));
    let problems = m.problems();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("networking.istio.io/v1 and networking.amime.dev/v1"), "{problems:?}");
    let shadowed: Vec<_> = m.status_targets().into_iter().map(|t| (t.feed, t.shadowed_by)).collect();
    assert_eq!(shadowed, vec![(AMIME_VS, None), (ISTIO_VS, Some(Group::Amime))]);
    // The Istio object changing while shadowed changes nothing served.
    run(&mut m, &mut index, vec![(ISTIO_VS, Apply(vs(Group::Istio, "r", 11, 2)), false, false)]);
    // A broken amime object still wins (no silent fallback)...
    run(&mut m, &mut index, vec![(AMIME_VS, Apply(vs(Group::Amime, "r", -1, 2)), false, true)]);
    assert_eq!(weight_of(&index, "r"), Some(20));
    // ...and once it is deleted, the Istio one takes over.
    run(&mut m, &mut index, vec![(AMIME_VS, Delete(vs(Group::Amime, "r", -1, 2)), true, true)]);
    assert_eq!(weight_of(&index, "r"), Some(11));
    assert!(m.problems().is_empty());
}

#[test]
fn a_crd_going_away_drops_its_objects_and_a_late_event_is_ignored() {
    use WatchEvent::*;
    let (mut m, mut index) = (model(), Index::new());
    run(
        &mut m,
        &mut index,
        vec![
            (ISTIO_VS, Apply(vs(Group::Istio, "a", 10, 1)), true, false),
            (ISTIO_VS, Apply(vs(Group::Istio, "b", -1, 1)), false, true),
        ],
    );
    let out = m.remove_feed(ISTIO_VS, &mut index);
    assert!(out.changed && out.problems && out.status);
    assert!(index.virtual_services.is_empty() && m.problems().is_empty());
    assert_eq!(m.handle(ISTIO_VS, Apply(vs(Group::Istio, "a", 10, 1)), &mut index), Outcome::default());
    assert!(!m.has_feed(ISTIO_VS));
    // Back (another version): the feed starts unsynced again.
    m.add_feed(ISTIO_VS, "v1beta1", "virtualservices");
    assert!(m.pending().contains(&ISTIO_VS));
}

#[test]
fn status_fields_are_tracked_and_a_status_write_coming_back_changes_nothing_served() {
    use WatchEvent::*;
    let (mut m, mut index) = (model(), Index::new());
    run(&mut m, &mut index, vec![(AMIME_VS, Apply(vs(Group::Amime, "r", 100, 4)), true, false)]);
    let mut with_status = vs(Group::Amime, "r", 100, 4);
    with_status["status"] = json!({"observedGeneration": 4, "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "accepted",
         "observedGeneration": 4, "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let out = m.handle(AMIME_VS, Apply(with_status), &mut index);
    assert_eq!(out, Outcome { changed: false, problems: false, status: true });
    let tracked = &m.status_targets()[0].tracked;
    assert_eq!((tracked.generation, tracked.observed_generation), (4, Some(4)));
    assert_eq!(tracked.accepted.as_ref().unwrap().reason, "Accepted");
}
