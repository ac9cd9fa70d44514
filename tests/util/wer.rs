//! The word error rate, for tests and benchmarks that run real speech
//! through an engine. One file, included by the library's unit tests, the
//! integration tests and the benchmarks.

/// Word error rate of `hypothesis` against `reference`: the word-level edit
/// distance (substitutions, deletions, insertions) over the reference's word
/// count. Case and punctuation are ignored (apostrophes count, so "it's" is
/// not "its"); 0.0 is a perfect match, and insertions can take it above 1.0.
/// An empty reference counts as one word.
pub(crate) fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'')
                    .flat_map(char::to_lowercase)
                    .collect::<String>()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let (r, h) = (words(reference), words(hypothesis));
    // One row of the edit-distance table: row[j] is the distance between the
    // reference words so far and the first j hypothesis words.
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let substitution = diagonal + usize::from(rw != hw);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[h.len()] as f64 / r.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn wer_counts_word_edits() {
        let word_error_rate = super::word_error_rate;
        assert_eq!(word_error_rate("The cat sat.", "the cat sat"), 0.0);
        assert_eq!(word_error_rate("a b c d", "a x c"), 0.5); // one substitution, one deletion
        assert_eq!(word_error_rate("a b", "a b c d"), 1.0); // two insertions
        assert_eq!(word_error_rate("It's here", "its here"), 0.5);
        // One substitution and one insertion over four words.
        assert_eq!(
            word_error_rate("the birch canoe slid", "The birch can use slid."),
            0.5
        );
        assert_eq!(word_error_rate("", ""), 0.0);
    }
}
