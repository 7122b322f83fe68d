//! Resource versions are canonical with meshd's Envoy schemas: an Envoy resource holding
//! multi-entry maps (filter metadata of several filters, each a Struct of several fields)
//! gets one version however prost happens to order those maps when encoding it.

use std::collections::{BTreeSet, HashMap};

use control_plane::envoy_json::descriptor_pool;
use xds::pb::envoy::config::cluster::v3::Cluster;
use xds::pb::envoy::config::core::v3::Metadata;
use xds::pb::google::protobuf::{value::Kind, Struct, Value};
use xds::Resource;

/// A cluster whose metadata has `filters` filters with `fields` fields each; fresh
/// `HashMap`s on every call.
fn cluster(filters: usize, fields: usize) -> Cluster {
    let filter_metadata: HashMap<String, Struct> = (0..filters)
        .map(|f| {
            let fields = (0..fields)
                .map(|i| (format!("field-{i}"), Value { kind: Some(Kind::StringValue(format!("{f}-{i}"))) }))
                .collect();
            (format!("filter-{f}"), Struct { fields })
        })
        .collect();
    Cluster {
        name: "outbound|9080||reviews.bookinfo.svc.cluster.local".into(),
        metadata: Some(Metadata { filter_metadata, ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn resources_with_multi_entry_maps_have_one_version() {
    xds::set_descriptor_pool(descriptor_pool().clone());
    let encodings: BTreeSet<Vec<u8>> = (0..100).map(|_| prost::Message::encode_to_vec(&cluster(4, 4))).collect();
    assert!(encodings.len() > 1, "the maps should encode in several orders for this test to mean anything");
    let versions: BTreeSet<String> =
        (0..100).map(|_| Resource::from_message("c", &cluster(4, 4)).version().to_owned()).collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_ne!(Resource::from_message("c", &cluster(4, 3)).version(), versions.first().unwrap().as_str());
}
