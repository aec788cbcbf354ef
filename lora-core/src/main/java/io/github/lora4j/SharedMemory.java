package io.github.lora4j;

import java.lang.ref.WeakReference;
import org.nd4j.linalg.api.buffer.DataBuffer;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The one rule for whether two arrays share memory, used wherever lora4j refuses it: an output that would overwrite
 * an input, {@code W} or an adapter ({@code Checks}), two modules of a {@code LoraModel} over one weight (tied
 * weights), a modules_to_save copy over a module's weight, and two layers merging into one {@code W}
 * ({@code MergedWeights}).
 *
 * <p>The rule: each non-empty array occupies the byte range {@link Span} {@code [start, end)} from its lowest to its
 * highest element, {@code start = address + (offset + Σ min(0, (size_d − 1)·stride_d))·width} and
 * {@code end = address + (offset + Σ max(0, (size_d − 1)·stride_d) + 1)·width}; two arrays overlap when their ranges
 * share a byte. It is conservative: two interleaved views of one buffer (even and odd columns) count as overlapping,
 * though no element is shared; disjoint row blocks of one array do not. It never says "disjoint" of arrays that share
 * an element (a property test checks this against every element's address). Empty arrays overlap nothing. On a
 * backend whose buffers give no host address ({@link DataBuffer#address()} is 0), two arrays overlap when they view
 * the same buffer.
 *
 * <pre>{@code
 * INDArray w = Nd4j.create(DataType.FLOAT, 4, 4);
 * SharedMemory.overlap(w.getRow(0), w.getRow(1));   // false: disjoint row blocks
 * SharedMemory.overlap(w.getColumn(0), w);         // true
 * }</pre>
 */
public final class SharedMemory {

    private SharedMemory() {
    }

    /**
     * The byte range {@code [start, end)} an array's elements lie in, with the buffer it views (held weakly, so a span
     * kept in a registry does not keep memory alive). Where the buffer has no host address, start and end are 0.
     */
    public static final class Span {
        private final long start;
        private final long end;
        private final boolean addressed;
        private final WeakReference<DataBuffer> buffer;

        private Span(long start, long end, boolean addressed, DataBuffer buffer) {
            this.start = start;
            this.end = end;
            this.addressed = addressed;
            this.buffer = new WeakReference<>(buffer);
        }

        /** {@return the address of the lowest byte, or 0 without a host address} */
        public long start() {
            return start;
        }

        /** {@return the address one past the highest byte, or 0 without a host address} */
        public long end() {
            return end;
        }

        /** {@return whether the range is a host address range (otherwise only the buffer identifies the memory)} */
        public boolean hasAddress() {
            return addressed;
        }

        /** {@return the buffer that owns the memory (a view's original buffer), or null once it is collected} */
        public DataBuffer buffer() {
            return buffer.get();
        }

        /**
         * {@return whether this span and {@code other} share a byte} (without host addresses: the same buffer).
         *
         * @param other another span
         */
        public boolean overlaps(Span other) {
            if (!addressed || !other.addressed) {
                DataBuffer b = buffer.get();
                return b != null && b == other.buffer.get();
            }
            return start < other.end && other.start < end;
        }

        @Override
        public String toString() {
            return addressed ? "[" + Long.toHexString(start) + ", " + Long.toHexString(end) + ")" : "buffer " + buffer();
        }
    }

    /**
     * {@return the bytes {@code a}'s elements lie in, or null for an empty array (it occupies no memory)}
     *
     * @param a any array
     */
    public static Span span(INDArray a) {
        if (a.length() == 0) {
            return null;
        }
        DataBuffer d = a.data();
        long lo = a.offset();
        long hi = a.offset();
        for (int i = 0; i < a.rank(); i++) {
            long extent = (a.size(i) - 1) * a.stride(i);
            if (extent < 0) {
                lo += extent;
            } else {
                hi += extent;
            }
        }
        long base = d.address();
        DataBuffer root = d.originalDataBuffer() != null ? d.originalDataBuffer() : d;
        if (base == 0) {
            return new Span(0, 0, false, root);
        }
        long width = d.getElementSize();
        return new Span(base + lo * width, base + (hi + 1) * width, true, root);
    }

    /**
     * {@return whether {@code a} and {@code b} may share memory, by the rule above} Null or empty arrays share none.
     *
     * @param a an array, or null
     * @param b an array, or null
     */
    public static boolean overlap(INDArray a, INDArray b) {
        Span sa = a == null ? null : span(a);
        Span sb = b == null ? null : span(b);
        return sa != null && sb != null && sa.overlaps(sb);
    }
}
