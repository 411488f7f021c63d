//! Bounds the work of reading a YAML text before the YAML parser sees it: one linear pass over
//! the bytes that measures nesting, documents, anchors, aliases, nodes and scalar length.
//!
//! Pure; touches nothing but the text. The parser behind it (libyaml) costs time that grows with
//! the square of the nesting depth and builds every alias expansion in memory, so a 200 kB file
//! could cost minutes and a 400 kB one gigabytes. This pass refuses such a text first, naming the
//! line and the limit. It is not a YAML parser: where it cannot tell the structure it counts
//! more, never less, so a text it accepts is cheap to parse, and ordinary specs are far from
//! every limit.

use std::{collections::HashMap, fmt};

/// How much one spec file may ask of the parser. Each is far above what a real spec needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nested collections (block levels, flow brackets and compact `- - -` together).
    pub max_depth: usize,
    /// YAML documents in one file, empty ones included.
    pub max_documents: usize,
    /// Anchors (`&name`) in one file.
    pub max_anchors: usize,
    /// Aliases (`*name`) in one file.
    pub max_aliases: usize,
    /// Nodes in one file, an alias counting as every node it stands for.
    pub max_nodes: u64,
    /// Bytes in one scalar (Kubernetes stores at most about 1.5 MiB per object).
    pub max_scalar_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_documents: 1000,
            max_anchors: 1000,
            max_aliases: 10_000,
            max_nodes: 100_000,
            max_scalar_bytes: 1 << 20,
        }
    }
}

/// A limit the text goes beyond, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// 1-based line on which the limit was passed.
    pub line: usize,
    pub what: String,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} (a limit for spec files; the file was not parsed)",
            self.what, self.line
        )
    }
}

/// Check `text` against `limits` in one pass, in time linear in its length.
pub fn check(text: &str, limits: &Limits) -> Result<(), Exceeded> {
    let mut scan = Scan::new(text.as_bytes(), limits);
    scan.run()
}

/// Where an anchored node is known to end.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// A block node on the lines below the anchor, owned by the key or `-` at column `owner`:
    /// it ends at a content line indented no further than that (for a key's value, a `- `
    /// line at the key's column still belongs to it).
    Block { owner: isize, dash_continues: bool },
    /// A node on the anchor's own line in block context: ends with the line, or where its flow
    /// brackets close if they run on.
    Inline,
    /// Anchored inside flow brackets at this depth: ends by `,`, `:` or the closing bracket.
    Flow { depth: usize },
}

impl Scope {
    fn ends_at_line(self, indent: usize, dash: bool) -> bool {
        match self {
            Scope::Block {
                owner,
                dash_continues,
            } => {
                let indent = indent as isize;
                indent < owner || indent == owner && !(dash_continues && dash)
            }
            Scope::Inline | Scope::Flow { .. } => false,
        }
    }
}

#[derive(Debug)]
struct OpenAnchor<'a> {
    name: &'a [u8],
    scope: Scope,
    nodes_before: u64,
    /// Closed early by an alias of it (a node never holds an alias of itself).
    closed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anchor {
    /// Still open, at this index of the open stack.
    Open(usize),
    /// Closed: the nodes it stands for.
    Closed(u64),
}

/// Lines of a block scalar (`|`, `>`) are text, whatever they look like.
#[derive(Clone, Copy, Debug)]
struct BlockScalar {
    /// Column of the key or indicator that owns the scalar; -1 at the document's root.
    owner: isize,
    /// Indentation of its content, once known.
    content: Option<usize>,
    bytes: usize,
    line: usize,
}

struct Scan<'a, 'l> {
    b: &'a [u8],
    limits: &'l Limits,
    i: usize,
    line: usize,
    line_start: usize,
    in_document: bool,
    documents: usize,
    anchors_defined: usize,
    aliases: usize,
    nodes: u64,
    flow: usize,
    indents: Vec<usize>,
    /// `- ` and `? ` indicators on the current line: each opens a level the indentation hides.
    compact: usize,
    /// Column owning a block scalar that starts here (see [`BlockScalar::owner`]).
    owner: isize,
    /// Column of the first node on this line in block context: the key if a `:` follows.
    key_col: Option<usize>,
    /// The last token was a key's `:` (so an anchor here anchors that key's value).
    after_value_indicator: bool,
    open: Vec<OpenAnchor<'a>>,
    anchors: HashMap<&'a [u8], Anchor>,
    block_scalar: Option<BlockScalar>,
}

fn is_space(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

impl<'a, 'l> Scan<'a, 'l> {
    fn new(b: &'a [u8], limits: &'l Limits) -> Self {
        Self {
            b,
            limits,
            i: 0,
            line: 1,
            line_start: 0,
            in_document: false,
            documents: 0,
            anchors_defined: 0,
            aliases: 0,
            nodes: 0,
            flow: 0,
            indents: Vec::new(),
            compact: 0,
            owner: -1,
            key_col: None,
            after_value_indicator: false,
            open: Vec::new(),
            anchors: HashMap::new(),
            block_scalar: None,
        }
    }

    fn exceeded(&self, what: String) -> Exceeded {
        Exceeded {
            line: self.line,
            what,
        }
    }

    /// Length of the line break at `at`, 0 if none. libyaml also breaks lines at NEL, LS and
    /// PS, so they must end a comment here too or text after them would go unseen.
    fn break_len(&self, at: usize) -> usize {
        match self.b.get(at..).unwrap_or_default() {
            [b'\r', b'\n', ..] => 2,
            [b'\n' | b'\r', ..] => 1,
            [0xC2, 0x85, ..] => 2,
            [0xE2, 0x80, 0xA8 | 0xA9, ..] => 3,
            _ => 0,
        }
    }

    fn at_break_or_end(&self, at: usize) -> bool {
        at >= self.b.len() || self.break_len(at) > 0
    }

    /// Index of the next line break at or after `from` (or the end of the text).
    fn line_end(&self, from: usize) -> usize {
        let mut at = from;
        while at < self.b.len() && self.break_len(at) == 0 {
            at += 1;
        }
        at
    }

    /// Move past the line break at `self.i` (or to the end).
    fn next_line(&mut self) {
        let len = self.break_len(self.i);
        self.i = (self.i + len.max(1)).min(self.b.len());
        self.line += 1;
        self.line_start = self.i;
    }

    fn column(&self, at: usize) -> usize {
        at - self.line_start
    }

    fn depth(&self) -> usize {
        self.indents.len() + self.compact + self.flow
    }

    fn check_depth(&self) -> Result<(), Exceeded> {
        if self.depth() > self.limits.max_depth {
            return Err(self.exceeded(format!(
                "nesting deeper than {} levels",
                self.limits.max_depth
            )));
        }
        Ok(())
    }

    fn add_nodes(&mut self, count: u64) -> Result<(), Exceeded> {
        self.nodes = self.nodes.saturating_add(count);
        if self.nodes > self.limits.max_nodes {
            return Err(self.exceeded(format!(
                "more than {} nodes (an alias counts as every node it stands for)",
                self.limits.max_nodes
            )));
        }
        Ok(())
    }

    fn check_scalar(&self, bytes: usize, line: usize) -> Result<(), Exceeded> {
        if bytes > self.limits.max_scalar_bytes {
            return Err(Exceeded {
                line,
                what: format!("a value longer than {} bytes", self.limits.max_scalar_bytes),
            });
        }
        Ok(())
    }

    fn start_document(&mut self) -> Result<(), Exceeded> {
        self.documents += 1;
        if self.documents > self.limits.max_documents {
            return Err(self.exceeded(format!("more than {} documents", self.limits.max_documents)));
        }
        Ok(())
    }

    /// Record the anchor at `index` of the open stack as closed now.
    fn close_anchor(&mut self, index: usize) {
        let anchor = &mut self.open[index];
        if anchor.closed {
            return;
        }
        anchor.closed = true;
        let size = self.nodes - anchor.nodes_before;
        if let Some(state) = self.anchors.get_mut(anchor.name)
            && *state == Anchor::Open(index)
        {
            *state = Anchor::Closed(size);
        }
    }

    /// Close every open anchor from the top of the stack down to `keep` (exclusive).
    fn close_anchors_down_to(&mut self, keep: usize) {
        while self.open.len() > keep {
            self.close_anchor(self.open.len() - 1);
            self.open.pop();
        }
    }

    /// Close anchors from the top of the stack while `ends` says their scope ends here.
    fn close_anchors_while(&mut self, ends: impl Fn(Scope) -> bool) {
        let mut keep = self.open.len();
        while keep > 0 && (self.open[keep - 1].closed || ends(self.open[keep - 1].scope)) {
            keep -= 1;
        }
        self.close_anchors_down_to(keep);
    }

    fn run(&mut self) -> Result<(), Exceeded> {
        if self.b.starts_with("\u{FEFF}".as_bytes()) {
            self.i = 3;
            self.line_start = 3;
        }
        while self.i < self.b.len() {
            self.line_start = self.i;
            let mut content = self.i;
            while self.b.get(content) == Some(&b' ') {
                content += 1;
            }
            let indent = content - self.i;
            if indent == 0 && self.document_marker(content)? {
                continue;
            }
            if self.flow == 0 && self.block_scalar_line(content, indent)? {
                continue;
            }
            let first = self.b.get(content).copied();
            let blank = self.at_break_or_end(content)
                || first.is_some_and(is_space) && {
                    let end = self.line_end(content);
                    self.b[content..end].iter().all(|&c| is_space(c))
                };
            if blank || first == Some(b'#') {
                self.i = self.line_end(content);
                self.next_line();
                continue;
            }
            if indent == 0 && first == Some(b'%') {
                // A directive such as %YAML 1.2.
                self.i = self.line_end(content);
                self.next_line();
                continue;
            }
            if !self.in_document {
                self.in_document = true;
                self.start_document()?;
            }
            if self.flow == 0 {
                let dash = first == Some(b'-')
                    && (self.at_break_or_end(content + 1) || is_space(self.b[content + 1]));
                self.close_anchors_while(|scope| scope.ends_at_line(indent, dash));
                while self.indents.last().is_some_and(|&top| top > indent) {
                    self.indents.pop();
                }
                if self.indents.last() != Some(&indent) {
                    self.indents.push(indent);
                }
                self.compact = 0;
                // Until a key or indicator says otherwise, a block scalar here belongs to
                // something less indented than this line.
                self.owner = indent as isize - 1;
                self.key_col = None;
                self.check_depth()?;
            }
            self.i = content;
            self.tokens()?;
        }
        Ok(())
    }

    /// `---` or `...` at the start of a line: a new document. Returns whether one was read.
    fn document_marker(&mut self, at: usize) -> Result<bool, Exceeded> {
        let rest = &self.b[at..];
        let starts = rest.starts_with(b"---");
        if !(starts || rest.starts_with(b"...")) {
            return Ok(false);
        }
        let after = at + 3;
        if !(self.at_break_or_end(after) || is_space(self.b[after])) {
            return Ok(false);
        }
        // Everything of the document before ends here: anchors are per document.
        self.close_anchors_down_to(0);
        self.anchors.clear();
        self.indents.clear();
        self.flow = 0;
        self.compact = 0;
        self.owner = -1;
        self.block_scalar = None;
        self.in_document = starts;
        if starts {
            self.start_document()?;
            // What follows `---` on its line is the document's first content.
            self.indents.push(0);
            self.i = after;
            self.tokens()?;
        } else {
            self.i = self.line_end(after);
            self.next_line();
        }
        Ok(true)
    }

    /// Whether the line at `content` (indented by `indent`) belongs to an open block scalar,
    /// in which case it is counted and passed over.
    fn block_scalar_line(&mut self, content: usize, indent: usize) -> Result<bool, Exceeded> {
        let Some(mut scalar) = self.block_scalar else {
            return Ok(false);
        };
        let end = self.line_end(content);
        let blank = self.b[content..end].iter().all(|&c| is_space(c));
        let inside =
            blank || (indent as isize > scalar.owner && scalar.content.is_none_or(|c| indent >= c));
        if !inside {
            self.block_scalar = None;
            return Ok(false);
        }
        if !blank && scalar.content.is_none() {
            scalar.content = Some(indent);
        }
        scalar.bytes += end - self.line_start + 1;
        self.check_scalar(scalar.bytes, scalar.line)?;
        self.block_scalar = Some(scalar);
        self.i = end;
        self.next_line();
        Ok(true)
    }

    /// Read the tokens from `self.i` to the end of the line (a quoted scalar may carry on over
    /// several lines), then step past the line break.
    fn tokens(&mut self) -> Result<(), Exceeded> {
        loop {
            while self.i < self.b.len() && is_space(self.b[self.i]) {
                self.i += 1;
            }
            if self.i >= self.b.len() {
                return Ok(());
            }
            if self.break_len(self.i) > 0 {
                if self.flow == 0 {
                    self.close_anchors_while(|scope| matches!(scope, Scope::Inline));
                }
                self.next_line();
                return Ok(());
            }
            let c = self.b[self.i];
            let next = self.b.get(self.i + 1).copied();
            let next_is_blank = self.at_break_or_end(self.i + 1) || next.is_some_and(is_space);
            let after_space = self.i == self.line_start || is_space(self.b[self.i - 1]);
            // Properties (anchor, tag) keep the value position; any other token ends it.
            let after_value = std::mem::take(&mut self.after_value_indicator);
            if matches!(c, b'&' | b'!') {
                self.after_value_indicator = after_value;
            }
            match c {
                b'#' if after_space => {
                    self.i = self.line_end(self.i);
                }
                b'-' | b'?' if self.flow == 0 && next_is_blank => {
                    self.owner = self.column(self.i) as isize;
                    self.key_col = None;
                    self.compact += 1;
                    self.check_depth()?;
                    self.add_nodes(1)?;
                    self.i += 1;
                }
                b':' if next_is_blank || self.flow > 0 => {
                    self.value_indicator()?;
                }
                b'[' | b'{' => {
                    self.note_node_start();
                    self.flow += 1;
                    self.check_depth()?;
                    self.add_nodes(1)?;
                    self.i += 1;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    let depth = self.flow;
                    self.close_anchors_while(|scope| match scope {
                        Scope::Flow { depth: at } => at > depth,
                        Scope::Inline => depth == 0,
                        Scope::Block { .. } => false,
                    });
                    self.i += 1;
                }
                b',' if self.flow > 0 => {
                    let depth = self.flow;
                    self.close_anchors_while(
                        |scope| matches!(scope, Scope::Flow { depth: at } if at >= depth),
                    );
                    self.i += 1;
                }
                b'&' => self.anchor()?,
                b'*' => self.alias()?,
                b'!' => {
                    // A tag: it names a type, and holds no nodes.
                    self.i = self.name_end(self.i + 1);
                }
                b'\'' | b'"' => self.quoted(c)?,
                b'|' | b'>' if self.flow == 0 => self.block_scalar_header()?,
                _ => self.plain()?,
            }
        }
    }

    /// In block context, remember where the line's first node starts: if it turns out to be a
    /// key, a block scalar after its `:` belongs to that column.
    fn note_node_start(&mut self) {
        if self.flow == 0 && self.key_col.is_none() {
            self.key_col = Some(self.column(self.i));
        }
    }

    /// `:` after a key: the value that follows is a node, even when it is left empty.
    fn value_indicator(&mut self) -> Result<(), Exceeded> {
        if self.flow > 0 {
            let depth = self.flow;
            self.close_anchors_while(
                |scope| matches!(scope, Scope::Flow { depth: at } if at >= depth),
            );
        } else {
            let column = self.column(self.i);
            self.owner = self.key_col.take().unwrap_or(column) as isize;
            self.after_value_indicator = true;
        }
        self.add_nodes(1)?;
        self.i += 1;
        Ok(())
    }

    /// Whether a node starts on this line after `from` (past spaces and a tag), rather than on
    /// the lines below.
    fn node_follows_on_line(&self, from: usize) -> bool {
        let mut at = from;
        let skip_spaces = |mut at: usize| {
            while at < self.b.len() && is_space(self.b[at]) {
                at += 1;
            }
            at
        };
        at = skip_spaces(at);
        if self.b.get(at) == Some(&b'!') {
            at = skip_spaces(self.name_end(at + 1));
        }
        !(self.at_break_or_end(at) || self.b[at] == b'#')
    }

    /// End of an anchor, alias or tag name starting at `from`.
    fn name_end(&self, from: usize) -> usize {
        let mut at = from;
        while at < self.b.len()
            && !is_space(self.b[at])
            && self.break_len(at) == 0
            && !(self.flow > 0 && is_flow_indicator(self.b[at]))
        {
            at += 1;
        }
        at
    }

    fn anchor(&mut self) -> Result<(), Exceeded> {
        let end = self.name_end(self.i + 1);
        let name = &self.b[self.i + 1..end];
        self.check_scalar(name.len(), self.line)?;
        self.anchors_defined += 1;
        if self.anchors_defined > self.limits.max_anchors {
            return Err(self.exceeded(format!("more than {} anchors", self.limits.max_anchors)));
        }
        let scope = if self.flow > 0 {
            Scope::Flow { depth: self.flow }
        } else if self.node_follows_on_line(end) {
            Scope::Inline
        } else {
            Scope::Block {
                owner: self.owner,
                // `key: &a` then `- item` lines at the key's column: the list is the value.
                dash_continues: self.after_value_indicator,
            }
        };
        self.anchors.insert(name, Anchor::Open(self.open.len()));
        self.open.push(OpenAnchor {
            name,
            scope,
            nodes_before: self.nodes,
            closed: false,
        });
        self.i = end;
        Ok(())
    }

    fn alias(&mut self) -> Result<(), Exceeded> {
        let end = self.name_end(self.i + 1);
        let name = &self.b[self.i + 1..end];
        self.aliases += 1;
        if self.aliases > self.limits.max_aliases {
            return Err(self.exceeded(format!("more than {} aliases", self.limits.max_aliases)));
        }
        let stands_for = match self.anchors.get(name).copied() {
            Some(Anchor::Closed(nodes)) => nodes,
            // A node cannot hold an alias of itself: where an anchor's end was not seen, its
            // node ended before this alias at the latest.
            Some(Anchor::Open(index)) => {
                self.close_anchor(index);
                self.nodes - self.open[index].nodes_before
            }
            // Undefined: the parser will say so.
            None => 1,
        };
        self.add_nodes(stands_for.max(1))?;
        self.i = end;
        Ok(())
    }

    fn quoted(&mut self, quote: u8) -> Result<(), Exceeded> {
        let start_line = self.line;
        let start = self.i;
        self.note_node_start();
        self.add_nodes(1)?;
        self.i += 1;
        loop {
            if self.i >= self.b.len() {
                break;
            }
            let c = self.b[self.i];
            if quote == b'"' && c == b'\\' {
                self.i += 2;
                continue;
            }
            if c == quote {
                if quote == b'\'' && self.b.get(self.i + 1) == Some(&b'\'') {
                    self.i += 2;
                    continue;
                }
                self.i += 1;
                break;
            }
            if self.break_len(self.i) > 0 {
                self.next_line();
                // A document marker ends any scalar (the parser reports the missing quote).
                let rest = &self.b[self.i..];
                if (rest.starts_with(b"---") || rest.starts_with(b"..."))
                    && (self.at_break_or_end(self.i + 3) || is_space(self.b[self.i + 3]))
                {
                    break;
                }
                continue;
            }
            self.i += 1;
        }
        self.i = self.i.min(self.b.len());
        self.check_scalar(self.i - start, start_line)
    }

    fn block_scalar_header(&mut self) -> Result<(), Exceeded> {
        self.add_nodes(1)?;
        let end = self.line_end(self.i);
        // An explicit indentation indicator (`|2`) fixes the content's indentation.
        let explicit = self.b[self.i + 1..end]
            .iter()
            .take(2)
            .find(|c| c.is_ascii_digit() && **c != b'0')
            .map(|c| (c - b'0') as usize);
        let content = explicit.map(|m| {
            if self.owner >= 0 {
                self.owner as usize + m
            } else {
                m
            }
        });
        self.block_scalar = Some(BlockScalar {
            owner: self.owner,
            content,
            bytes: 0,
            line: self.line,
        });
        self.i = end;
        Ok(())
    }

    /// A plain (unquoted) scalar: to the end of the line in block context, to the next flow
    /// indicator in flow context, or to the `: ` that makes it a key.
    fn plain(&mut self) -> Result<(), Exceeded> {
        let start = self.i;
        self.note_node_start();
        self.add_nodes(1)?;
        self.i += 1;
        while self.i < self.b.len() && self.break_len(self.i) == 0 {
            let c = self.b[self.i];
            let next = self.b.get(self.i + 1).copied();
            if c == b':'
                && (self.at_break_or_end(self.i + 1)
                    || next.is_some_and(is_space)
                    || self.flow > 0 && next.is_some_and(is_flow_indicator))
            {
                break;
            }
            if c == b'#' && is_space(self.b[self.i - 1]) {
                break;
            }
            if self.flow > 0 && is_flow_indicator(c) {
                break;
            }
            self.i += 1;
        }
        self.check_scalar(self.i - start, self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn exceeded(text: &str) -> Exceeded {
        check(text, &limits()).expect_err("over a limit")
    }

    #[test]
    fn ordinary_specs_pass() {
        let texts = [
            include_str!("../../examples/orders.yaml"),
            include_str!("../../examples/kubernetes/orders.yaml"),
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  script: |\n    set -e\n    a=[[[[[[[[ && b=&c *d\n    - - - - - - - - - - - - - - - -\n    {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\n  other: x\n",
            "defaults: &defaults {engine: redis, failover: {detectAfter: 1s}}\na: *defaults\nb: *defaults\nlist:\n  - &item {name: a}\n  - *item\n",
            "{\"apiVersion\": \"v1\", \"items\": [{\"a\": [1, 2, {\"b\": null}]}], \"c\":\"d\"}\n",
            "a: 'it''s # not a comment'\nb: \"x \\\" [[[[\"\nc: http://x/y?a=1&b=*2 # comment [[[[\n",
            "a: b\r\nc:\r\n  - d\r\n",
            "%YAML 1.2\n---\na: 1\n...\n---\nb: 2\n",
            "key: >-\n  folded [ text\n  more { text\n",
            "- - a\n  - b\n- c\n",
        ];
        for text in texts {
            assert_eq!(check(text, &limits()), Ok(()), "{text}");
        }
    }

    #[test]
    fn flow_nesting_is_refused_at_the_line_it_passes_the_limit() {
        let text = format!(
            "apiVersion: x\nspec:\n  a: 1\n  b: {}\n",
            "[".repeat(100_000)
        );
        let e = exceeded(&text);
        assert_eq!(e.line, 4);
        assert_eq!(
            e.to_string(),
            "nesting deeper than 64 levels at line 4 (a limit for spec files; the file was not parsed)"
        );
        let fits = format!("a: {}1{}\n", "[".repeat(60), "]".repeat(60));
        assert_eq!(check(&fits, &limits()), Ok(()));
    }

    #[test]
    fn block_and_compact_nesting_count_too() {
        let mut deep = String::new();
        for i in 0..100 {
            deep.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert_eq!(exceeded(&deep).line, 65, "k0 is level 1");
        assert!(
            exceeded(&"- ".repeat(70))
                .what
                .starts_with("nesting deeper")
        );
        // A flow mapping used as a key, hidden after a block scalar that ended: still seen.
        let hidden = format!("k: |\n  text\n{}: v\n", "[".repeat(100));
        assert_eq!(exceeded(&hidden).line, 3);
    }

    #[test]
    fn block_scalar_content_is_text_but_only_while_indented_past_its_owner() {
        // libyaml ends the scalar at the unindented line: the brackets there are structure.
        let text = format!("a:\n  - k: |\n      text\n    b: {}\n", "[".repeat(80));
        assert_eq!(exceeded(&text).line, 4);
        let quoted_key = format!("\"k\": |\n{}\n", "[".repeat(80));
        assert_eq!(exceeded(&quoted_key).line, 2);
        let first_token = format!("k:\n  |\n{}\n", "[".repeat(80));
        assert_eq!(exceeded(&first_token).line, 3);
        let explicit = format!("k: |4\n    text\n  {}\n", "[".repeat(80));
        assert_eq!(exceeded(&explicit).line, 3);
    }

    #[test]
    fn unicode_line_breaks_end_comments() {
        for brk in ["\u{85}", "\u{2028}", "\u{2029}", "\r"] {
            let text = format!("# note{brk}{}", "[".repeat(80));
            assert_eq!(exceeded(&text).line, 2, "{brk:?}");
        }
    }

    #[test]
    fn documents_are_counted() {
        let e = exceeded(&"---\n".repeat(2000));
        assert_eq!(
            (e.line, e.what.as_str()),
            (1001, "more than 1000 documents")
        );
        assert_eq!(check(&"---\na: 1\n".repeat(500), &limits()), Ok(()));
    }

    #[test]
    fn aliases_count_as_what_they_stand_for() {
        // The classic "billion laughs": nine levels of nine aliases each.
        let mut bomb = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            let refs = vec![format!("*{prev}"); 9].join(",");
            bomb.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        let e = exceeded(&bomb);
        assert!(e.what.starts_with("more than 100000 nodes"), "{e}");
        assert!(e.line <= 7, "{e}");

        // One big anchor, many aliases of it: block anchors too.
        let big = format!("a: &big\n{}", "  - x\n".repeat(20_000));
        let aliased = format!("{big}b: [*big, *big, *big, *big]\n");
        assert_eq!(exceeded(&aliased).line, 20_002);
        assert_eq!(check(&format!("{big}b: *big\n"), &limits()), Ok(()));
    }

    #[test]
    fn anchors_and_aliases_are_counted() {
        let anchors: String = (0..1001).map(|i| format!("k{i}: &a{i} v\n")).collect();
        assert_eq!(exceeded(&anchors).what, "more than 1000 anchors");
        let aliases = format!("a: &a 1\nb: [{}]\n", vec!["*a"; 10_001].join(","));
        assert_eq!(exceeded(&aliases).what, "more than 10000 aliases");
    }

    #[test]
    fn long_values_are_refused_where_they_start() {
        let plain = format!("a: 1\nname: {}\n", "n".repeat(2 << 20));
        assert_eq!(exceeded(&plain).line, 2);
        let quoted = format!("a: 1\nb: 2\nname: \"{}\"\n", "q\n".repeat(1 << 20));
        assert_eq!(exceeded(&quoted).line, 3);
        let block = format!("name: |\n{}", "  line of text\n".repeat(100_000));
        assert!(exceeded(&block).what.starts_with("a value longer than"));
    }

    #[test]
    fn nodes_are_counted() {
        let flat = format!("a: [{}]\n", vec!["1"; 100_001].join(","));
        assert!(exceeded(&flat).what.starts_with("more than 100000 nodes"));
        let block = "- x\n".repeat(60_000);
        assert!(exceeded(&block).what.starts_with("more than 100000 nodes"));
    }
}
