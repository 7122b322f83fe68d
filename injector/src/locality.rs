//! Where a proxy or an endpoint runs: Istio's locality, `region/zone/subzone`.
//!
//! One home for the notation both sides of the bootstrap contract read: `meshctl
//! bootstrap --locality` writes it into Envoy's `node.locality`, and meshd reads the
//! same notation from ServiceEntry endpoints, the `istio-locality` pod label and Nodes'
//! topology labels.

use std::fmt;

/// Pod label that sets a workload's locality, as Istio reads it: `region.zone.subzone`
/// (label values cannot hold `/`), or `region/zone/subzone`.
pub const LOCALITY_LABEL: &str = "istio-locality";
/// Node labels Kubernetes and Istio put the topology in.
pub const NODE_REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const NODE_ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const NODE_SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// A locality; every part may be empty (unknown). Ordered, so it can key maps.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalityError {
    #[error("{0:?} has more than three parts (region/zone/subzone)")]
    TooManyParts(String),
    #[error("{0:?} has an empty part (write region, region/zone or region/zone/subzone)")]
    EmptyPart(String),
    #[error("{text:?}: {part:?} may hold only letters, digits, '-', '_' and '.'")]
    BadCharacter { text: String, part: String },
}

impl Locality {
    /// Parses `region`, `region/zone` or `region/zone/subzone` (no wildcards; the empty
    /// string is the unknown locality).
    pub fn parse(text: &str) -> Result<Locality, LocalityError> {
        if text.is_empty() {
            return Ok(Locality::default());
        }
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() > 3 {
            return Err(LocalityError::TooManyParts(text.to_owned()));
        }
        for part in &parts {
            if part.is_empty() {
                return Err(LocalityError::EmptyPart(text.to_owned()));
            }
            if !part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(LocalityError::BadCharacter { text: text.to_owned(), part: (*part).to_owned() });
            }
        }
        let part = |i: usize| parts.get(i).map_or(String::new(), |p| (*p).to_owned());
        Ok(Locality { region: part(0), zone: part(1), subzone: part(2) })
    }

    /// The locality of the `istio-locality` label's value (`.` separates the parts
    /// unless the value uses `/`), as Istio reads it.
    pub fn from_label(value: &str) -> Result<Locality, LocalityError> {
        if value.contains('/') {
            Locality::parse(value)
        } else {
            Locality::parse(&value.replace('.', "/"))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }
}

impl fmt::Display for Locality {
    /// `region/zone/subzone`, trailing empty parts left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [&self.region, &self.zone, &self.subzone];
        let used = parts.iter().rposition(|p| !p.is_empty()).map_or(0, |i| i + 1);
        let text: Vec<&str> = parts[..used].iter().map(|p| p.as_str()).collect();
        f.write_str(&text.join("/"))
    }
}

impl std::str::FromStr for Locality {
    type Err = LocalityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Locality::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localities_parse_and_print_back() {
        for (text, want) in [
            ("", ("", "", "")),
            ("r1", ("r1", "", "")),
            ("r1/z1", ("r1", "z1", "")),
            ("us-east1/us-east1-b/rack.7", ("us-east1", "us-east1-b", "rack.7")),
        ] {
            let l = Locality::parse(text).unwrap();
            assert_eq!((l.region.as_str(), l.zone.as_str(), l.subzone.as_str()), want, "{text}");
            assert_eq!(l.to_string(), text);
        }
        for bad in ["r/z/s/x", "r//s", "/z", "r/", "r z", "r/*"] {
            assert!(Locality::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Locality::from_label("r1.z1.s1").unwrap().to_string(), "r1/z1/s1");
        assert_eq!(Locality::from_label("r1/z1").unwrap().to_string(), "r1/z1");
    }
}
