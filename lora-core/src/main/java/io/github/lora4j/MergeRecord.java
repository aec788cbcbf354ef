package io.github.lora4j;

import java.util.Arrays;

/**
 * What an EXACT merge keeps for its unmerge: how it computed Δ, its own copy of the factors (so that the unmerge
 * computes the very same Δ even if someone wrote into A, B or the scale in between), and the elements whose round
 * trip {@code fl(fl(w + d) − d)} is not {@code w}, as linear index and original bits, sorted by index.
 */
final class MergeRecord {

    /** How a merge computed Δ; its unmerge must compute the very same Δ, so it takes the same route. */
    enum Route {
        /** Java rows with {@link Math#fma} (exactly rounded on any thread and JIT tier). */
        JAVA_FMA,
        /** Java rows with a multiply and an add (where {@code fma} is no instruction). */
        JAVA_MUL_ADD
    }

    // int indices: W is limited to 2^31 - 9 elements (checked by the merge).
    private int[] index = new int[16];
    private long[] bits = new long[16];
    private int size;
    private final Route route;
    /** The merge's pass with its copy of the factors and the scale, for the unmerge; set when the merge succeeded. */
    private ExactMerge.Pass pass;

    MergeRecord(Route route) {
        this.route = route;
    }

    /** Keeps the merge's pass (its factor copy) for the unmerge. */
    void keep(ExactMerge.Pass mergePass) {
        this.pass = mergePass;
    }

    /** The merge's pass. */
    ExactMerge.Pass pass() {
        return pass;
    }

    Route route() {
        return route;
    }

    void add(int linearIndex, long rawBits) {
        if (size == index.length) {
            index = Arrays.copyOf(index, size * 2);
            bits = Arrays.copyOf(bits, size * 2);
        }
        index[size] = linearIndex;
        bits[size] = rawBits;
        size++;
    }

    /** Appends all of {@code later}, whose indices all follow this record's. */
    void addAll(MergeRecord later) {
        if (size + later.size > index.length) {
            int capacity = Math.max(size + later.size, index.length * 2);
            index = Arrays.copyOf(index, capacity);
            bits = Arrays.copyOf(bits, capacity);
        }
        System.arraycopy(later.index, 0, index, size, later.size);
        System.arraycopy(later.bits, 0, bits, size, later.size);
        size += later.size;
    }

    /** Forgets the entries from position {@code newSize} on (a row that was not written after all). */
    void truncate(int newSize) {
        size = newSize;
    }

    /** Drops unused capacity: the record lives as long as the merge, so it should hold what it needs only. */
    void trim() {
        index = Arrays.copyOf(index, size);
        bits = Arrays.copyOf(bits, size);
    }

    /** Position of the first entry with index {@code >= linearIndex}. */
    int lowerBound(long linearIndex) {
        int pos = Arrays.binarySearch(index, 0, size, (int) linearIndex);
        return pos >= 0 ? pos : -pos - 1;
    }

    /** Linear index of entry {@code pos}. */
    int index(int pos) {
        return index[pos];
    }

    /** Original raw bits of entry {@code pos}. */
    long bits(int pos) {
        return bits[pos];
    }

    /** Number of remembered elements. */
    int size() {
        return size;
    }

    /**
     * Heap bytes kept for the unmerge: 12 per remembered element (int index, raw bits; capacity included) plus the
     * factor copy, {@code r·(in + out)} elements.
     */
    long bytes() {
        return 12L * index.length + (pass == null ? 0 : pass.factorBytes());
    }
}
