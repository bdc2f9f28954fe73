//! RFC 6962 / RFC 9162 Merkle tree hashing with SM3: leaf `H(0x00‖d)`, node `H(0x01‖l‖r)`.
//!
//! [`Frontier`] is the compact append-only state a kiosk keeps in SQLite (one hash per set bit
//! of the tree size, O(log n)). The slice-based functions ([`root`], [`inclusion_proof`],
//! [`consistency_proof`]) compute over all leaf hashes; the verifiers follow RFC 9162 §2.1.3.2
//! and §2.1.4.2 exactly and never index untrusted input.

use sm3::{Digest, Sm3};

/// A 32-byte SM3 hash.
pub type Hash = [u8; 32];

/// Merkle verification or decoding failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MerkleError {
    /// Index or size out of range.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The second tree is smaller than the first (a rollback).
    #[error("tree size went backwards from {first} to {second}")]
    SizeWentBackwards {
        /// Earlier size.
        first: u64,
        /// Later size.
        second: u64,
    },
    /// The proof does not verify.
    #[error("Merkle proof does not verify")]
    ProofMismatch,
    /// Frontier bytes are malformed.
    #[error("malformed Merkle frontier encoding")]
    MalformedFrontier,
}

/// SM3 of arbitrary bytes.
pub fn sm3_hash(data: &[u8]) -> Hash {
    Sm3::digest(data).into()
}

/// Leaf hash `SM3(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sm3::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash `SM3(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sm3::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SM3("")`.
pub fn empty_root() -> Hash {
    sm3_hash(&[])
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH over leaf hashes (RFC 9162 §2.1.1).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [only] => *only,
        _ => {
            let (left, right) = leaves.split_at(split_point(leaves.len()));
            node_hash(&root(left), &root(right))
        }
    }
}

/// Inclusion proof PATH(index, leaves) (RFC 9162 §2.1.3.1).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let size = leaves.len() as u64;
    let idx = usize::try_from(index)
        .ok()
        .filter(|i| *i < leaves.len())
        .ok_or(MerkleError::IndexOutOfRange { index, size })?;
    let mut proof = Vec::new();
    path(idx, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let (left, right) = leaves.split_at(split_point(leaves.len()));
    if m < left.len() {
        path(m, left, out);
        out.push(root(right));
    } else {
        path(m - left.len(), right, out);
        out.push(root(left));
    }
}

/// Consistency proof PROOF(first_size, leaves) (RFC 9162 §2.1.4.1). Empty when
/// `first_size` is 0 or equals the tree size.
pub fn consistency_proof(leaves: &[Hash], first_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let second = leaves.len() as u64;
    let m = usize::try_from(first_size)
        .ok()
        .filter(|m| *m <= leaves.len())
        .ok_or(MerkleError::SizeWentBackwards {
            first: first_size,
            second,
        })?;
    let mut proof = Vec::new();
    if m > 0 && m < leaves.len() {
        subproof(m, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    if m == leaves.len() {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let (left, right) = leaves.split_at(split_point(leaves.len()));
    if m <= left.len() {
        subproof(m, left, complete, out);
        out.push(root(right));
    } else {
        subproof(m - left.len(), right, false, out);
        out.push(root(left));
    }
}

/// Shift `fn_` and `sn` right until `fn_`'s low bit is set or it is zero.
fn shift_until_odd(fn_: &mut u64, sn: &mut u64) {
    while *fn_ & 1 == 0 && *fn_ != 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// Verify an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    expected_root: &Hash,
) -> Result<(), MerkleError> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange {
            index,
            size: tree_size,
        });
    }
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::ProofMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            shift_until_odd(&mut fn_, &mut sn);
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 && r == *expected_root {
        Ok(())
    } else {
        Err(MerkleError::ProofMismatch)
    }
}

/// Verify a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first_size: u64,
    second_size: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if first_size > second_size {
        return Err(MerkleError::SizeWentBackwards {
            first: first_size,
            second: second_size,
        });
    }
    if first_size == second_size {
        return if proof.is_empty() && first_root == second_root {
            Ok(())
        } else {
            Err(MerkleError::ProofMismatch)
        };
    }
    if first_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(MerkleError::ProofMismatch)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first_size.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((seed, rest)) = path.split_first() else {
        return Err(MerkleError::ProofMismatch);
    };
    let (mut fn_, mut sn) = (first_size - 1, second_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if sn == 0 {
            return Err(MerkleError::ProofMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            shift_until_odd(&mut fn_, &mut sn);
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 && fr == *first_root && sr == *second_root {
        Ok(())
    } else {
        Err(MerkleError::ProofMismatch)
    }
}

/// Compact append-only Merkle state: the roots of the perfect subtrees that make up the tree,
/// left (largest) to right. Appending is O(log n); the root is O(log n).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf hash (see [`leaf_hash`]).
    pub fn append(&mut self, leaf: Hash) {
        let mut carry = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            match self.nodes.pop() {
                Some(left) => carry = node_hash(&left, &carry),
                None => break,
            }
            s >>= 1;
        }
        self.nodes.push(carry);
        self.size += 1;
    }

    /// Append raw entry bytes (hashes them as a leaf).
    pub fn append_entry(&mut self, entry: &[u8]) {
        self.append(leaf_hash(entry));
    }

    /// Current root hash.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// Encoding for storage: size (u64 big-endian) followed by the subtree hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.nodes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for n in &self.nodes {
            out.extend_from_slice(n);
        }
        out
    }

    /// Decode [`Frontier::to_bytes`]; checks the hash count matches the size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MerkleError> {
        let (size_bytes, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or(MerkleError::MalformedFrontier)?;
        let size = u64::from_be_bytes(*size_bytes);
        if rest.len() != 32 * size.count_ones() as usize {
            return Err(MerkleError::MalformedFrontier);
        }
        let nodes = rest
            .chunks_exact(32)
            .map(|c| <Hash>::try_from(c).map_err(|_| MerkleError::MalformedFrontier))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { size, nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
            .collect()
    }

    /// Independent reference: build levels bottom-up, promoting a lone right node (RFC 6962
    /// trees equal this "promote odd node" construction).
    fn reference_root(l: &[Hash]) -> Hash {
        if l.is_empty() {
            return empty_root();
        }
        let mut level = l.to_vec();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => node_hash(a, b),
                    [a] => *a,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
        }
        level[0]
    }

    #[test]
    fn rfc_shape_for_three_leaves() {
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        assert_ne!(leaf_hash(b"x"), sm3_hash(b"x"), "domain separation");
    }

    #[test]
    fn frontier_matches_reference_up_to_64_and_round_trips() {
        let all = leaves(64);
        let mut f = Frontier::new();
        assert_eq!(f.root(), reference_root(&[]));
        for n in 1..=64 {
            f.append(all[n - 1]);
            assert_eq!(f.size(), n as u64);
            assert_eq!(f.root(), reference_root(&all[..n]), "size {n}");
            assert_eq!(root(&all[..n]), reference_root(&all[..n]));
            assert_eq!(Frontier::from_bytes(&f.to_bytes()).as_ref(), Ok(&f));
        }
    }

    #[test]
    fn all_inclusion_and_consistency_proofs_up_to_64() {
        let all = leaves(64);
        for n in 1..=64usize {
            let r = root(&all[..n]);
            for i in 0..n {
                let p = inclusion_proof(&all[..n], i as u64).unwrap();
                verify_inclusion(&all[i], i as u64, n as u64, &p, &r).unwrap();
                let other = leaf_hash(b"not a leaf");
                assert!(verify_inclusion(&other, i as u64, n as u64, &p, &r).is_err());
            }
            for m in 0..=n {
                let p = consistency_proof(&all[..n], m as u64).unwrap();
                let old = root(&all[..m]);
                verify_consistency(m as u64, n as u64, &old, &r, &p).unwrap();
                if m > 0 && m < n {
                    let forked = leaf_hash(b"fork");
                    assert!(verify_consistency(m as u64, n as u64, &forked, &r, &p).is_err());
                    if m > 0 {
                        assert!(verify_consistency(n as u64, m as u64, &r, &old, &p).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_frontier_rejected() {
        assert_eq!(
            Frontier::from_bytes(&[0; 7]),
            Err(MerkleError::MalformedFrontier)
        );
        let mut bytes = 3u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 32]);
        assert_eq!(
            Frontier::from_bytes(&bytes),
            Err(MerkleError::MalformedFrontier)
        );
    }

    proptest! {
        #[test]
        fn random_pairs_verify_and_tampering_fails(
            n in 1usize..300, m_frac in 0.0f64..1.0, i_frac in 0.0f64..1.0, flip in 0usize..64
        ) {
            let all = leaves(n);
            let m = ((n as f64) * m_frac) as usize;
            let i = (((n as f64) * i_frac) as usize).min(n - 1);
            let r = root(&all);
            let ip = inclusion_proof(&all, i as u64).unwrap();
            prop_assert!(verify_inclusion(&all[i], i as u64, n as u64, &ip, &r).is_ok());
            let cp = consistency_proof(&all, m as u64).unwrap();
            let old = root(&all[..m]);
            prop_assert!(verify_consistency(m as u64, n as u64, &old, &r, &cp).is_ok());
            if !cp.is_empty() {
                let mut bad = cp.clone();
                let k = flip % bad.len();
                bad[k][flip % 32] ^= 1;
                prop_assert!(verify_consistency(m as u64, n as u64, &old, &r, &bad).is_err());
            }
            if !ip.is_empty() {
                let mut bad = ip.clone();
                let k = flip % bad.len();
                bad[k][0] ^= 0x80;
                prop_assert!(verify_inclusion(&all[i], i as u64, n as u64, &bad, &r).is_err());
            }
        }
    }
}
