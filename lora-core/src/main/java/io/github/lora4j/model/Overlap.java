package io.github.lora4j.model;

import io.github.lora4j.SharedMemory;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The tied-weight refusal of {@link LoraModel}: no two modules' weights may share memory, by
 * {@link SharedMemory}'s rule (conservative address ranges; the same buffer where the backend gives no addresses).
 */
final class Overlap {

    private Overlap() {
    }

    /** Whether {@code a} and {@code b} share memory: {@link SharedMemory#overlap}. */
    static boolean overlaps(INDArray a, INDArray b) {
        return SharedMemory.overlap(a, b);
    }

    /**
     * Refuses any two of {@code weights} (module path to array) that share memory, naming both: sorted by start
     * address, each range is compared with the furthest end seen so far ({@code O(n log n)} for a model of many
     * modules). Spans without host addresses are compared pairwise (small models on exotic backends only).
     */
    static void refuseShared(Map<String, INDArray> weights) {
        List<Map.Entry<String, SharedMemory.Span>> addressed = new ArrayList<>();
        List<Map.Entry<String, SharedMemory.Span>> unaddressed = new ArrayList<>();
        weights.forEach((path, w) -> {
            SharedMemory.Span s = SharedMemory.span(w);
            if (s != null) {
                (s.hasAddress() ? addressed : unaddressed).add(Map.entry(path, s));
            }
        });
        for (int i = 0; i < unaddressed.size(); i++) {
            for (int j = i + 1; j < unaddressed.size(); j++) {
                if (unaddressed.get(i).getValue().overlaps(unaddressed.get(j).getValue())) {
                    throw shared(unaddressed.get(i).getKey(), unaddressed.get(j).getKey());
                }
            }
        }
        addressed.sort(Comparator.comparingLong(e -> e.getValue().start()));
        String furthest = null;
        long end = Long.MIN_VALUE;
        for (Map.Entry<String, SharedMemory.Span> e : addressed) {
            SharedMemory.Span s = e.getValue();
            if (furthest != null && s.start() < end) {
                throw shared(furthest, e.getKey());
            }
            if (s.end() > end) {
                end = s.end();
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
