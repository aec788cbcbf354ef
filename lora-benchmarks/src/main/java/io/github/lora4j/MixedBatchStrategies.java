package io.github.lora4j;

import java.util.ArrayList;
import java.util.List;

/**
 * The benchmarks' handle on the mixed batch's strategy switch, which lora-core keeps package-private (a test and
 * diagnosis switch, not API): {@code ManyAdaptersBenchmark} times each strategy beside the cost model's own choice.
 * In package {@code io.github.lora4j} for that access; on the class path it is one runtime package with lora-core's.
 */
public final class MixedBatchStrategies {

    private MixedBatchStrategies() {
    }

    /**
     * The strategies' names.
     *
     * @return {@code ROWS}, {@code SEGMENTED}, {@code STACKED}
     */
    public static List<String> names() {
        List<String> names = new ArrayList<>();
        for (MixedBatch.Strategy s : MixedBatch.Strategy.values()) {
            names.add(s.name());
        }
        return names;
    }

    /**
     * Makes every following mixed batch take one strategy, or the cost model's choice again.
     *
     * @param name a name of {@link #names()}, or null for the cost model's choice
     */
    public static void force(String name) {
        MixedBatch.forced = name == null ? null : MixedBatch.Strategy.valueOf(name);
    }

    /**
     * Largest {@code n·R} (rows times total rank) the stacked strategy accepts from the cost model.
     *
     * @return the bound
     */
    public static long stackedMaxElements() {
        return MixedBatch.STACKED_MAX_ELEMENTS;
    }
}
