//! Breaking a cue's text into lines: whole pieces (words, or the pieces a
//! run without spaces was cut into) on lines of at most a given width, the
//! lines of a cue as even as the width allows.
//!
//! Widths count characters (Unicode scalar values), as a reader sees them
//! in most scripts. A piece keeps its leading space inside a line and loses
//! it at the start of one; a piece wider than a line stands alone on its
//! line (it is never cut here: the builder cuts long runs into pieces).

/// Splits `text` into pieces, each with the white space before it.
pub(super) fn pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut begin = 0;
    let mut in_word = false;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                pieces.push(&text[begin..at]);
                begin = at;
                in_word = false;
            }
        } else {
            in_word = true;
        }
    }
    if in_word {
        pieces.push(&text[begin..]);
    }
    pieces
}

/// Characters in `text`.
pub(super) fn width(text: &str) -> usize {
    text.chars().count()
}

/// Greedy lines: each piece on the current line if it fits, else on a new
/// one. The first line is `first` wide (room for a label), the others
/// `rest`. This gives the fewest lines any break can.
pub(super) fn wrap(pieces: &[&str], first: usize, rest: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut used = 0;
    for piece in pieces {
        let limit = if lines.is_empty() { first } else { rest };
        let inline = if line.is_empty() {
            piece.trim_start()
        } else {
            piece
        };
        if !line.is_empty() && used + width(inline) > limit {
            lines.push(std::mem::take(&mut line).trim_end().to_owned());
            let head = piece.trim_start();
            line.push_str(head);
            used = width(head);
        } else {
            line.push_str(inline);
            used += width(inline);
        }
    }
    let line = line.trim_end();
    if !line.is_empty() {
        lines.push(line.to_owned());
    }
    lines
}

/// The lines of a cue: as few as [`wrap`] needs at `rest` wide (`first`
/// for the first line), and among those, the narrowest, so that two lines
/// come out of even length rather than a full one and a stub.
pub(super) fn balance(pieces: &[&str], first: usize, rest: usize) -> Vec<String> {
    let greedy = wrap(pieces, first, rest);
    if greedy.len() < 2 {
        return greedy;
    }
    // Fewer lines never come from a narrower width, so the narrowest width
    // that keeps the count is found by bisection.
    let label = rest.saturating_sub(first);
    let (mut low, mut high) = (1, rest);
    while low < high {
        let mid = (low + high) / 2;
        if wrap(pieces, mid.saturating_sub(label), mid).len() <= greedy.len() {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    wrap(pieces, low.saturating_sub(label), low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_the_space_before_them() {
        assert_eq!(pieces(" the quick  fox"), [" the", " quick", "  fox"]);
        assert_eq!(pieces("Hello, world "), ["Hello,", " world"]);
        assert!(pieces("   ").is_empty());
    }

    #[test]
    fn wrap_fills_lines_and_never_cuts_a_piece() {
        let text = " the quick brown fox jumps over the lazy dog";
        assert_eq!(
            wrap(&pieces(text), 20, 20),
            ["the quick brown fox", "jumps over the lazy", "dog"]
        );
        assert_eq!(
            wrap(&["supercalifragilistic", " a"], 5, 5),
            ["supercalifragilistic", "a"]
        );
        assert_eq!(
            wrap(&[" a", " b"], 1, 3),
            ["a", "b"],
            "a narrower first line"
        );
    }

    #[test]
    fn balance_evens_two_lines_out() {
        let text = " the quick brown fox jumps over the lazy dog";
        let lines = balance(&pieces(text), 42, 42);
        assert_eq!(lines, ["the quick brown fox", "jumps over the lazy dog"]);
        assert_eq!(balance(&pieces(" short"), 42, 42), ["short"]);
        for line in balance(&pieces(text), 30, 42) {
            assert!(width(&line) <= 42, "{line}");
        }
    }
}
