//! The rules a schema cannot express: references between members, cycles, priorities, durations, cross-object links.

use std::{collections::BTreeMap, time::Duration};

use super::{Document, Out, Problem, Resource};
use crate::api::{EngineKind, ProxyMode, ReplicationCluster, ReplicationMode, Target, VirtualName};
use crate::bounded::{self, quoted, value};

/// Shortest `detectAfter` accepted: below it a scheduling hiccup looks like a dead master.
pub const MIN_DETECT_AFTER: Duration = Duration::from_millis(100);
/// Highest member priority.
pub const MAX_PRIORITY: u32 = 1000;
/// Most members in one cluster (the CRD's `maxItems`): every check stays cheap.
pub const MAX_MEMBERS: usize = 64;

/// Check every document, alone and against the others (duplicates, VirtualName -> cluster links).
pub fn check(documents: &[Document]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<(&str, &str, &str), &Document> = BTreeMap::new();
    // The first cluster of each (namespace, name), for the names that refer to it.
    let mut clusters: BTreeMap<(&str, &str), &ReplicationCluster> = BTreeMap::new();
    for doc in documents {
        if let Resource::Cluster(cluster) = &doc.resource {
            clusters
                .entry((doc.resource.namespace(), doc.resource.name()))
                .or_insert(cluster);
        }
    }
    for doc in documents {
        let mut out = Out {
            doc,
            problems: &mut problems,
        };
        check_metadata_name(&mut out);
        match &doc.resource {
            Resource::Cluster(cluster) => check_cluster(cluster, &mut out),
            Resource::VirtualName(vn) => check_virtual_name(vn, &clusters, &mut out),
        }
        let key = (
            doc.resource.kind(),
            doc.resource.namespace(),
            doc.resource.name(),
        );
        if key.2.is_empty() {
            continue;
        }
        if let Some(first) = seen.get(&key) {
            out.fail(
                "metadata.name",
                format!(
                    "defined twice in namespace {} (first in {}, document {})",
                    value(key.1),
                    first.file,
                    first.index
                ),
            );
        } else {
            seen.insert(key, doc);
        }
    }
    check_listen_addresses(documents, &mut problems);
    problems
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_metadata_name(out: &mut Out<'_>) {
    let name = out.doc.resource.name().to_string();
    if !name.is_empty() && !is_dns_subdomain(&name) {
        out.fail(
            "metadata.name",
            format!("{} is not a valid name: lowercase letters, digits, '-' and '.', at most 253 characters", quoted(&name)),
        );
    }
}

/// Longest `host:port` (the CRD's `maxLength`): a DNS name of 253 and a port.
const MAX_ADDRESS: usize = 260;

/// Why `address` is not a usable `host:port`, if it is not.
pub fn address_problem(address: &str) -> Option<String> {
    if address.len() > MAX_ADDRESS {
        return Some(format!(
            "{} is longer than {MAX_ADDRESS} bytes",
            quoted(address)
        ));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Some(format!("{} is not host:port", quoted(address)));
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && !host.contains(':')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    if !host_ok {
        return Some(format!(
            "{}: host {} is not a host name or IP address (IPv6 goes in brackets)",
            quoted(address),
            quoted(host)
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some(format!(
            "{}: port {} is not a number from 1 to 65535",
            quoted(address),
            quoted(port)
        )),
    }
}

fn check_cluster(cluster: &ReplicationCluster, out: &mut Out<'_>) {
    let spec = &cluster.spec;
    if spec.members.len() > MAX_MEMBERS {
        // The checks below compare members with each other: refuse before they run.
        out.fail(
            "spec.members",
            format!(
                "{} members; a cluster has at most {MAX_MEMBERS}",
                spec.members.len()
            ),
        );
        return;
    }
    let names: Vec<&str> = spec.members.iter().map(|m| m.name.as_str()).collect();
    let known = || bounded::list(&names, 16, ", ");
    let index_of = |name: &str| names.iter().position(|n| *n == name);

    if spec.members.is_empty() {
        out.fail("spec.members", "at least one member is required");
    }
    let mut addresses: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in spec.members.iter().enumerate() {
        let at = |field: &str| format!("spec.members[{i}].{field}");
        if !is_dns_label(&m.name) {
            out.fail(
                at("name"),
                format!("{} is not a valid member name: lowercase letters, digits and '-', at most 63 characters", quoted(&m.name)),
            );
        }
        if let Some(first) = index_of(&m.name).filter(|&first| first != i) {
            out.fail(
                at("name"),
                format!(
                    "duplicate member name {} (also spec.members[{first}])",
                    quoted(&m.name)
                ),
            );
        }
        if let Some(problem) = address_problem(&m.address) {
            out.fail(at("address"), problem);
        } else if let Some(first) = addresses.insert(m.address.as_str(), i) {
            out.fail(
                at("address"),
                format!(
                    "{} is also the address of spec.members[{first}]",
                    value(&m.address)
                ),
            );
        }
        if m.priority > MAX_PRIORITY {
            out.fail(
                at("priority"),
                format!("{} is above the maximum {MAX_PRIORITY}", m.priority),
            );
        }
        if let Some(up) = &m.upstream {
            if up == &m.name {
                out.fail(at("upstream"), "a member cannot replicate from itself");
            } else if index_of(up).is_none() {
                out.fail(
                    at("upstream"),
                    format!("unknown member {} (members: {})", quoted(up), known()),
                );
            } else if m.name == spec.primary {
                out.fail(
                    at("upstream"),
                    format!(
                        "{} is spec.primary, which replicates from nobody",
                        value(&m.name)
                    ),
                );
            }
        }
    }
    for cycle in upstream_cycles(cluster) {
        let first = index_of(&cycle[0]).unwrap_or(0);
        out.fail(
            format!("spec.members[{first}].upstream"),
            format!("upstream cycle: {}", cycle.join(" -> ")),
        );
    }

    match index_of(&spec.primary) {
        None => out.fail(
            "spec.primary",
            format!(
                "unknown member {} (members: {})",
                quoted(&spec.primary),
                known()
            ),
        ),
        Some(i) if spec.members[i].priority == 0 => out.fail(
            "spec.primary",
            format!(
                "{} has priority 0 (spec.members[{i}].priority) and can never be primary",
                spec.primary
            ),
        ),
        Some(_) => {}
    }

    let failover = &spec.failover;
    if let Some(standby) = &failover.standby {
        match index_of(standby) {
            None => out.fail("spec.failover.standby", format!("unknown member {} (members: {})", quoted(standby), known())),
            Some(_) if standby == &spec.primary => {
                out.fail("spec.failover.standby", "the standby must be a member other than spec.primary")
            }
            Some(i) if spec.members[i].priority == 0 => out.fail(
                "spec.failover.standby",
                format!("{standby} has priority 0 (spec.members[{i}].priority) and can never be promoted"),
            ),
            Some(_) => {}
        }
    }
    if failover.detect_after.is_negative() || failover.detect_after < MIN_DETECT_AFTER {
        out.fail(
            "spec.failover.detectAfter",
            format!(
                "{} is too short: at least 100ms, or a hiccup looks like a dead master",
                failover.detect_after
            ),
        );
    }
    if let Some(refused) = failover.refused_after {
        if refused.is_negative() || refused < MIN_DETECT_AFTER {
            out.fail(
                "spec.failover.refusedAfter",
                format!("{refused} is too short: at least 100ms"),
            );
        } else if refused > failover.detect_after {
            out.fail(
                "spec.failover.refusedAfter",
                format!(
                    "{refused} exceeds detectAfter {}: a refused connection is stronger evidence than silence, so it never waits longer",
                    failover.detect_after
                ),
            );
        }
    }
    if failover.cooldown.is_negative() {
        out.fail(
            "spec.failover.cooldown",
            format!("{} must not be negative", failover.cooldown),
        );
    }

    let replication = &spec.replication;
    let replicas = spec.members.len().saturating_sub(1);
    if replication.mode == ReplicationMode::Sync
        && (replication.min_sync_replicas as usize) > replicas
    {
        out.fail(
            "spec.replication.minSyncReplicas",
            format!(
                "sync mode needs {} replica(s) to acknowledge each write, but the cluster has only {replicas}",
                replication.min_sync_replicas
            ),
        );
    }
    if replication.min_sync_replicas == 0 {
        out.fail("spec.replication.minSyncReplicas", "must be at least 1");
    }

    check_agents(spec, out);
    super::backup::check(spec, out);
    super::bootstrap::check(cluster, out);
    super::zones::check_cluster(spec, out);

    if let Some(creds) = &spec.credentials {
        let sources = [
            creds.secret_ref.is_some(),
            creds.password_file.is_some(),
            creds.password_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            out.fail(
                "spec.credentials",
                "set exactly one of secretRef, passwordFile, passwordEnv",
            );
        }
        if let Some(var) = &creds.password_env
            && (var.is_empty()
                || var.starts_with(|c: char| c.is_ascii_digit())
                || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            out.fail(
                "spec.credentials.passwordEnv",
                format!("{} is not an environment variable name", quoted(var)),
            );
        }
        for (field, value, max) in [
            ("username", creds.username.as_deref(), 256),
            ("passwordFile", creds.password_file.as_deref(), 4096),
            ("passwordEnv", creds.password_env.as_deref(), 256),
        ] {
            if let Some(value) = value
                && (value.is_empty() || value.len() > max)
            {
                out.fail(
                    format!("spec.credentials.{field}"),
                    format!("{} bytes; from 1 to {max}", value.len()),
                );
            }
        }
        if let Some(secret) = &creds.secret_ref
            && !is_dns_subdomain(&secret.name)
        {
            out.fail(
                "spec.credentials.secretRef.name",
                format!("{} is not a valid Secret name", quoted(&secret.name)),
            );
        }
    }
}

/// What a PostgreSQL cluster needs that a Redis one does not, and what only it can use.
fn check_agents(spec: &crate::api::ReplicationClusterSpec, out: &mut Out<'_>) {
    let with_agent: Vec<usize> = spec
        .members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.agent.is_some())
        .map(|(i, _)| i)
        .collect();
    if spec.engine == crate::api::EngineKind::Redis {
        for i in &with_agent {
            out.fail(
                format!("spec.members[{i}].agent"),
                "node agents serve PostgreSQL members; replicant manages Redis servers over their own protocol",
            );
        }
        if spec.agent_token.is_some() {
            out.fail(
                "spec.agentToken",
                "node agents serve PostgreSQL members only",
            );
        }
        if spec.agent_tls.is_some() {
            out.fail("spec.agentTls", "node agents serve PostgreSQL members only");
        }
        return;
    }
    for i in &with_agent {
        if let Some(problem) = spec.members[*i].agent.as_deref().and_then(address_problem) {
            out.fail(format!("spec.members[{i}].agent"), problem);
        }
    }
    if !with_agent.is_empty() && spec.agent_token.is_none() {
        out.fail(
            "spec.agentToken",
            "members name node agents, which accept only a bearer token: set secretRef, tokenFile or tokenEnv",
        );
    }
    if let Some(token) = &spec.agent_token {
        let sources = [
            token.secret_ref.is_some(),
            token.token_file.is_some(),
            token.token_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            out.fail(
                "spec.agentToken",
                "set exactly one of secretRef, tokenFile, tokenEnv",
            );
        }
    }
    if let Some(tls) = &spec.agent_tls {
        if with_agent.is_empty() {
            out.fail(
                "spec.agentTls",
                "no member names a node agent (spec.members[].agent), so there is nothing to speak TLS to",
            );
        }
        if tls.ca_secret_ref.is_some() == tls.ca_file.is_some() {
            out.fail("spec.agentTls", "set exactly one of caSecretRef, caFile");
        }
    }
    // The primary's lease must end, with a margin, before anyone may be promoted; below
    // this there is no room for one.
    let detect: std::time::Duration = spec.failover.detect_after.into();
    if detect < std::time::Duration::from_millis(500) {
        out.fail(
            "spec.failover.detectAfter",
            format!(
                "{} is too short for PostgreSQL: the primary's lease ends a probe timeout and a margin before detectAfter, which needs at least 500ms",
                crate::core::plan::human_duration(detect)
            ),
        );
    }
}

/// Every upstream cycle once, as member names starting from the first in spec order.
fn upstream_cycles(cluster: &ReplicationCluster) -> Vec<Vec<String>> {
    let upstream: BTreeMap<&str, &str> = cluster
        .spec
        .members
        .iter()
        .filter_map(|m| m.upstream.as_deref().map(|u| (m.name.as_str(), u)))
        .filter(|(m, u)| m != u)
        .collect();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    for m in &cluster.spec.members {
        let mut path = vec![m.name.as_str()];
        let mut cursor = m.name.as_str();
        while let Some(&next) = upstream.get(cursor) {
            if let Some(start) = path.iter().position(|p| *p == next) {
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(next.to_string());
                let members: std::collections::BTreeSet<&String> = cycle.iter().collect();
                let known = cycles
                    .iter()
                    .any(|c| c.iter().collect::<std::collections::BTreeSet<_>>() == members);
                if !known && start == 0 {
                    cycles.push(cycle);
                }
                break;
            }
            path.push(next);
            cursor = next;
        }
    }
    cycles
}

fn check_virtual_name(
    vn: &VirtualName,
    clusters: &BTreeMap<(&str, &str), &ReplicationCluster>,
    out: &mut Out<'_>,
) {
    let spec = &vn.spec;
    let namespace = out.doc.resource.namespace().to_string();
    let cluster = clusters.get(&(namespace.as_str(), spec.cluster.as_str()));
    match cluster {
        None => out.fail(
            "spec.cluster",
            format!(
                "no ReplicationCluster named {} in namespace {} among the files given",
                quoted(&spec.cluster),
                value(&namespace)
            ),
        ),
        Some(cluster) => {
            if spec.proxy_mode == ProxyMode::Multiplex && cluster.spec.engine != EngineKind::Redis {
                out.fail(
                    "spec.proxyMode",
                    format!(
                        "multiplex speaks the Redis protocol, but {} is a {} cluster; use passthrough",
                        spec.cluster,
                        format!("{:?}", cluster.spec.engine).to_lowercase()
                    ),
                );
            }
            if let Target::Member(member) = &spec.target
                && !cluster.spec.members.iter().any(|m| &m.name == member)
            {
                let names: Vec<&str> = cluster
                    .spec
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect();
                out.fail(
                    "spec.target",
                    format!(
                        "{} is neither primary, replicas, any, nor a member of {} (members: {})",
                        quoted(member),
                        value(&spec.cluster),
                        bounded::list(&names, 16, ", ")
                    ),
                );
            }
        }
    }
    super::zones::check_virtual_name(spec, cluster.map(|c| &c.spec), out);
    if spec.max_lag.is_some() && spec.target == Target::Primary {
        out.fail(
            "spec.maxLag",
            "applies only to read targets (replicas, any or a member)",
        );
    }
    if let Some(listen) = &spec.listen
        && let Some(problem) = address_problem(listen)
    {
        out.fail("spec.listen", problem);
    }
}

fn check_listen_addresses(documents: &[Document], problems: &mut Vec<Problem>) {
    let mut taken: BTreeMap<&str, &Document> = BTreeMap::new();
    for doc in documents {
        let Resource::VirtualName(vn) = &doc.resource else {
            continue;
        };
        let Some(listen) = vn.spec.listen.as_deref() else {
            continue;
        };
        if let Some(first) = taken.get(listen) {
            Out { doc, problems }.fail(
                "spec.listen",
                format!(
                    "{} is also the listen address of {} ({})",
                    value(listen),
                    first.label(),
                    first.file
                ),
            );
        } else {
            taken.insert(listen, doc);
        }
    }
}
