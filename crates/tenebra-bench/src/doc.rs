//! BENCHMARKS.md: one head written by `bench compare`, then one marked section per other
//! benchmark (`bench service`, `bench overhead`, `bench bfv`, `bench serverless`). Every benchmark writes its part through
//! [`write`], which leaves the other parts as they are.

use std::path::Path;

/// A part of BENCHMARKS.md between two HTML comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub start: &'static str,
    pub end: &'static str,
}

/// `tenebra bench service`.
pub const SERVICE: Section = Section {
    start: "<!-- bench service -->",
    end: "<!-- /bench service -->",
};

/// `tenebra bench overhead`.
pub const OVERHEAD: Section = Section {
    start: "<!-- bench overhead -->",
    end: "<!-- /bench overhead -->",
};

/// `tenebra bench bfv`.
pub const BFV: Section = Section {
    start: "<!-- bench bfv -->",
    end: "<!-- /bench bfv -->",
};

/// `tenebra bench serverless`.
pub const SERVERLESS: Section = Section {
    start: "<!-- bench serverless -->",
    end: "<!-- /bench serverless -->",
};

/// Measurements taken by hand (memory of an API node under an upload...): no benchmark
/// writes it, every benchmark keeps it.
pub const NOTES: Section = Section {
    start: "<!-- notes -->",
    end: "<!-- /notes -->",
};

/// Every marked section, in the order they follow the head.
pub const SECTIONS: [Section; 5] = [NOTES, SERVICE, OVERHEAD, BFV, SERVERLESS];

impl Section {
    /// `body` between this section's markers.
    pub fn wrap(&self, body: &str) -> String {
        format!("{}\n{}\n{}", self.start, body.trim_end(), self.end)
    }

    /// This section of `doc`, markers included.
    pub fn find<'a>(&self, doc: &'a str) -> Option<&'a str> {
        let a = doc.find(self.start)?;
        let b = doc[a..].find(self.end)? + a + self.end.len();
        Some(&doc[a..b])
    }
}

/// Where a benchmark's text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The head (everything before the first marked section).
    Head,
    Section(Section),
}

/// `doc` with `part` replaced by `text` (a section's text includes its markers): a section
/// is replaced where it is, or appended; the head is replaced and every section kept.
pub fn replace(doc: &str, part: Part, text: &str) -> String {
    match part {
        Part::Section(s) => match s.find(doc) {
            Some(old) => doc.replacen(old, text.trim_end(), 1),
            None if doc.trim().is_empty() => format!("{}\n", text.trim_end()),
            None => format!("{}\n\n{}\n", doc.trim_end(), text.trim_end()),
        },
        Part::Head => {
            let mut out = format!("{}\n", text.trim_end());
            for s in SECTIONS {
                if let Some(kept) = s.find(doc) {
                    out.push('\n');
                    out.push_str(kept);
                    out.push('\n');
                }
            }
            out
        }
    }
}

/// Writes `text` as `part` of the file at `path` (created if missing).
pub fn write(path: &Path, part: Part, text: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    std::fs::write(path, replace(&old, part, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_is_replaced_and_the_others_kept() {
        let doc = replace("", Part::Head, "# Benchmarks\n\nv1");
        let doc = replace(&doc, Part::Section(BFV), &BFV.wrap("bfv v1"));
        let doc = replace(&doc, Part::Section(SERVICE), &SERVICE.wrap("service v1"));
        assert!(doc.starts_with("# Benchmarks\n\nv1\n"));
        let doc = replace(&doc, Part::Section(NOTES), &NOTES.wrap("by hand"));
        let doc = replace(&doc, Part::Head, "# Benchmarks\n\nv2");
        let doc = replace(&doc, Part::Section(BFV), &BFV.wrap("bfv v2"));
        assert!(doc.starts_with("# Benchmarks\n\nv2\n"), "{doc}");
        assert!(
            !doc.contains("v1\n<!-- /bench bfv") && !doc.contains("bfv v1"),
            "{doc}"
        );
        assert_eq!(
            SERVICE.find(&doc),
            Some(SERVICE.wrap("service v1").as_str())
        );
        assert_eq!(BFV.find(&doc), Some(BFV.wrap("bfv v2").as_str()));
        assert_eq!(doc.matches("<!-- bench").count(), 2);
        assert_eq!(NOTES.find(&doc), Some(NOTES.wrap("by hand").as_str()));
        // Writing the same parts again changes nothing.
        let again = replace(&doc, Part::Section(BFV), &BFV.wrap("bfv v2"));
        assert_eq!(again, doc);
    }
}
