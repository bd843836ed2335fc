//! N-party conference mixing ("mix-minus") of 16-bit linear frames.
//!
//! In a conference each participant must hear everyone except themselves — hearing your own
//! voice back, delayed by the network, is an echo. Summing the other N−1 inputs for each of N
//! participants costs N² additions; instead the mixer sums all inputs once in `i32` and gives
//! each participant `total − own`, which is N additions and N subtractions per sample. Results
//! are clipped (saturated) to the `i16` range, which is how a mixer without automatic gain
//! control behaves when several people talk loudly at once.
//!
//! Frames of unequal length are zero-padded to the longest: a participant whose frame is
//! short (or empty, e.g. no packet this interval) contributes silence for the rest of the
//! frame, and every output has the longest length. This keeps the mixer total — a late or
//! missing packet degrades one voice, never the whole conference.

/// A reusable mix-minus mixer; keeps its scratch buffer between frames.
#[derive(Debug, Clone, Default)]
pub struct Mixer {
    total: Vec<i32>,
}

impl Mixer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sums all inputs into the scratch buffer; returns the frame length.
    fn sum(&mut self, inputs: &[&[i16]]) -> usize {
        let len = inputs.iter().map(|f| f.len()).max().unwrap_or(0);
        self.total.clear();
        self.total.resize(len, 0);
        for frame in inputs {
            for (t, &s) in self.total.iter_mut().zip(frame.iter()) {
                // Saturating: exact unless more than 65 535 inputs, and never a panic.
                *t = t.saturating_add(i32::from(s));
            }
        }
        len
    }

    /// For each input, the mix of all the *other* inputs, in input order.
    pub fn mix_minus(&mut self, inputs: &[&[i16]]) -> Vec<Vec<i16>> {
        let mut outputs = Vec::new();
        self.mix_minus_into(inputs, &mut outputs);
        outputs
    }

    /// Like [`mix_minus`](Self::mix_minus), reusing `outputs`' allocations (resized to one
    /// frame per input).
    pub fn mix_minus_into(&mut self, inputs: &[&[i16]], outputs: &mut Vec<Vec<i16>>) {
        self.sum(inputs);
        outputs.resize_with(inputs.len(), Vec::new);
        for (out, own) in outputs.iter_mut().zip(inputs) {
            out.clear();
            out.extend(self.total.iter().enumerate().map(|(i, &t)| {
                let own = own.get(i).map_or(0, |&s| i32::from(s));
                saturate(t.saturating_sub(own))
            }));
        }
    }

    /// The mix of all inputs (e.g. for a recording of the whole conference).
    pub fn mix_all(&mut self, inputs: &[&[i16]]) -> Vec<i16> {
        self.sum(inputs);
        self.total.iter().map(|&t| saturate(t)).collect()
    }
}

fn saturate(x: i32) -> i16 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_participant_hears_the_others() {
        let a = [100, -200, 300];
        let b = [10, 20, 30];
        let c = [1, 2, 3];
        let out = Mixer::new().mix_minus(&[&a, &b, &c]);
        assert_eq!(out, vec![vec![11, 22, 33], vec![101, -198, 303], vec![110, -180, 330]]);
    }

    #[test]
    fn two_parties_hear_each_other_exactly() {
        let a = [1, -32768, 32767, 0];
        let b = [-5, 7, -9, 11];
        let out = Mixer::new().mix_minus(&[&a, &b]);
        assert_eq!(out, vec![b.to_vec(), a.to_vec()]);
    }

    #[test]
    fn a_lone_participant_hears_silence() {
        let out = Mixer::new().mix_minus(&[&[1000, -1000, 32767]]);
        assert_eq!(out, vec![vec![0, 0, 0]]);
        assert!(Mixer::new().mix_minus(&[]).is_empty());
    }

    #[test]
    fn clips_at_both_rails_without_wrapping() {
        let loud = [30_000, -30_000];
        let out = Mixer::new().mix_minus(&[&loud, &loud, &loud]);
        assert_eq!(out, vec![vec![32767, -32768]; 3]);
        // Clipping happens on the output only: total − own is still exact.
        let big = [i16::MAX; 2];
        let neg = [i16::MIN; 2];
        let out = Mixer::new().mix_minus(&[&big, &big, &neg]);
        assert_eq!(out[2], vec![32767, 32767]);
        assert_eq!(out[0], vec![-1, -1]); // 32767 + (-32768)
    }

    #[test]
    fn unequal_lengths_are_zero_padded_to_the_longest() {
        let a = [1, 1, 1, 1];
        let b = [2, 2];
        let c: [i16; 0] = [];
        let out = Mixer::new().mix_minus(&[&a, &b, &c]);
        assert_eq!(out, vec![vec![2, 2, 0, 0], vec![1, 1, 1, 1], vec![3, 3, 1, 1]]);
    }

    #[test]
    fn many_participants_and_reused_buffers() {
        let frames: Vec<Vec<i16>> = (0..50).map(|i| vec![i as i16; 160]).collect();
        let inputs: Vec<&[i16]> = frames.iter().map(Vec::as_slice).collect();
        let mut mixer = Mixer::new();
        let mut outputs = vec![vec![0; 3]; 60]; // wrong count and length: resized
        mixer.mix_minus_into(&inputs, &mut outputs);
        assert_eq!(outputs.len(), 50);
        let total: i16 = (0..50).sum();
        for (i, out) in outputs.iter().enumerate() {
            assert_eq!(out.len(), 160);
            assert!(out.iter().all(|&s| s == total - i as i16));
        }
        assert_eq!(mixer.mix_all(&inputs), vec![total; 160]);
    }
}
