//! Hostile spec files of a chosen size, for the tests and the bench: each shape once cost the
//! YAML parser or the validator far more than its size (see `src/validate/bounds.rs`).

/// A shape, the size to aim at, and the text.
pub const SHAPES: &[&str] = &[
    "flow-nesting",
    "block-nesting",
    "documents",
    "alias-expansion",
    "anchors",
    "long-scalar",
    "many-members",
    "unknown-fields",
    "flat-list",
];

const HEADER: &str =
    "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {name: orders}\n";

/// `shape` at about `bytes` bytes.
pub fn text(shape: &str, bytes: usize) -> String {
    let mut out = String::from(HEADER);
    match shape {
        "flow-nesting" => {
            out.push_str("spec: ");
            out.push_str(&"[".repeat(bytes));
        }
        "block-nesting" => {
            out.push_str("spec:\n");
            let mut depth = 1;
            while out.len() < bytes {
                out.push_str(&" ".repeat(depth % 2000));
                out.push_str("k:\n");
                depth += 1;
            }
        }
        "documents" => out.push_str(&"---\n".repeat(bytes / 4)),
        "alias-expansion" => {
            // Nested aliases ("billion laughs"), then one anchor aliased over and over.
            out.push_str("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
            for i in 0..20 {
                let prev = if i == 0 {
                    "a".to_string()
                } else {
                    format!("l{}", i - 1)
                };
                out.push_str(&format!(
                    "l{i}: &l{i} [{}]\n",
                    vec![format!("*{prev}"); 10].join(",")
                ));
            }
            out.push_str("big: &big [");
            out.push_str(&"1,".repeat(bytes / 8));
            out.push_str("1]\nuse: [");
            while out.len() < bytes {
                out.push_str("*big,");
            }
            out.push_str("]\n");
        }
        "anchors" => {
            let mut i = 0;
            while out.len() < bytes {
                out.push_str(&format!("k{i}: &a{i} v\n"));
                i += 1;
            }
        }
        "long-scalar" => {
            out = format!(
                "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: {}}}\nspec: {{engine: redis}}\n",
                "n".repeat(bytes)
            );
        }
        "many-members" => {
            out.push_str("spec:\n  engine: redis\n  primary: m0\n  members:\n");
            let mut i = 0;
            while out.len() < bytes {
                out.push_str(&format!(
                    "    - {{name: m{i}, address: \"10.0.{}.{}:6379\", upstream: m{}}}\n",
                    i / 250 % 250,
                    i % 250,
                    i + 1
                ));
                i += 1;
            }
        }
        "unknown-fields" => {
            out.push_str("spec:\n  engine: redis\n  primary: a\n  members: [{name: a, address: \"127.0.0.1:1\"}]\n");
            let mut i = 0;
            while out.len() < bytes {
                out.push_str(&format!("  unknownField{i}: {i}\n"));
                i += 1;
            }
        }
        "flat-list" => {
            out.push_str("spec: [");
            out.push_str(&"1,".repeat(bytes / 2));
            out.push_str("1]\n");
        }
        other => panic!("no hostile shape {other}"),
    }
    out
}
