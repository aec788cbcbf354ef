package io.github.lora4j.model;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataBuffer;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Whether arrays share memory, from their address ranges: {@code [address + offset·size, + extent·size)} where the
 * extent covers every element the shape and strides reach. Conservative: two interleaved views of one buffer
 * (e.g. even and odd columns) count as overlapping. On a backend without host addresses, arrays overlap when they
 * view the same buffer.
 */
final class Overlap {

    private Overlap() {
    }

    /** {start, end} in bytes, or null for an empty array; start and end are buffer identities where no address. */
    private static long[] range(INDArray a) {
        if (a.length() == 0) {
            return null;
        }
        DataBuffer d = a.data();
        long element = d.getElementSize();
        long lo = a.offset();
        long hi = a.offset();
        long[] shape = a.shape();
        long[] stride = a.stride();
        for (int i = 0; i < shape.length; i++) {
            long extent = (shape[i] - 1) * stride[i];
            if (extent < 0) {
                lo += extent;
            } else {
                hi += extent;
            }
        }
        long base = d.address();
        return new long[] {base + lo * element, base + (hi + 1) * element, base};
    }

    private static Object buffer(INDArray a) {
        DataBuffer d = a.data();
        return d.originalDataBuffer() != null ? d.originalDataBuffer() : d;
    }

    /** Whether {@code a} and {@code b} share at least one byte (or, without addresses, one buffer). */
    static boolean overlaps(INDArray a, INDArray b) {
        long[] ra = range(a);
        long[] rb = range(b);
        if (ra == null || rb == null) {
            return false;
        }
        if (ra[2] == 0 || rb[2] == 0) {
            return buffer(a) == buffer(b);
        }
        return ra[0] < rb[1] && rb[0] < ra[1];
    }

    /**
     * Refuses any two of {@code weights} (module path to array) that share memory, naming both: sorted by start
     * address, each range is compared with the furthest end seen so far.
     */
    static void refuseShared(Map<String, INDArray> weights) {
        List<Map.Entry<String, INDArray>> list = new ArrayList<>(weights.entrySet());
        for (Map.Entry<String, INDArray> e : list) {
            if (range(e.getValue()) != null && range(e.getValue())[2] == 0) {
                // No host addresses: compare buffers pairwise (small models on exotic backends only).
                for (Map.Entry<String, INDArray> f : list) {
                    if (e != f && overlaps(e.getValue(), f.getValue())) {
                        throw shared(e.getKey(), f.getKey());
                    }
                }
            }
        }
        list.removeIf(e -> range(e.getValue()) == null);
        list.sort(Comparator.comparingLong(e -> range(e.getValue())[0]));
        String furthest = null;
        long end = Long.MIN_VALUE;
        for (Map.Entry<String, INDArray> e : list) {
            long[] r = range(e.getValue());
            if (furthest != null && r[0] < end) {
                throw shared(furthest, e.getKey());
            }
            if (r[1] > end) {
                end = r[1];
                furthest = e.getKey();
            }
        }
    }

    private static IllegalArgumentException shared(String a, String b) {
        return new IllegalArgumentException("modules '" + a + "' and '" + b + "' share weight memory (tied weights, "
                + "or views of one array); merging an adapter into one would change the other and unmerging both "
                + "would corrupt it. Expected separate arrays: give one module a copy (dup()) and keep its adapters "
                + "unmerged, or adapt only one of them");
    }
}
