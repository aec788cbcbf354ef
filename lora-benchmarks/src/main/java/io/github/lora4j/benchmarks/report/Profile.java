package io.github.lora4j.benchmarks.report;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * JMH settings of a report run.
 *
 * <ul>
 *   <li>{@link #QUICK}: in = out ∈ {1024, 4096}, r = 8, n ∈ {1, 64} (the shapes the targets name), all merge modes;
 *       1 fork, 2 × 0.5 s warm-up, 4 × 0.5 s measurement: 38 benchmark runs, about 3.5 minutes on 2 cores
 *       (196 s measured on a loaded machine).</li>
 *   <li>{@link #FULL}: the whole grid (in = out ∈ {1024, 4096}, r ∈ {8, 64}, n ∈ {1, 8, 64, 512}); 1 fork,
 *       3 × 1 s warm-up, 5 × 1 s measurement: 86 benchmark runs, about 15 minutes on 2 cores (estimated from
 *       the quick run: ~2 s of fork start-up and set-up plus 8 s of iterations per run, ~10.5 s each).</li>
 * </ul>
 * Both use sample-time mode, so every invocation is timed and medians are over all samples.
 *
 * @param name                  {@code quick} or {@code full}
 * @param forks                 JMH forks per benchmark
 * @param warmupIterations      warm-up iterations per fork
 * @param warmupMillis          length of a warm-up iteration
 * @param measurementIterations measured iterations per fork
 * @param measurementMillis     length of a measured iteration
 * @param params                parameter values that replace the benchmarks' own lists; empty for the full grid
 */
public record Profile(String name, int forks, int warmupIterations, long warmupMillis, int measurementIterations,
        long measurementMillis, Map<String, String[]> params) {

    /** A subset of the grid with short iterations. */
    public static final Profile QUICK = new Profile("quick", 1, 2, 500, 4, 500,
            params("size", new String[] {"1024", "4096"}, "rank", new String[] {"8"}, "batch", new String[] {"1", "64"}));

    /** The whole grid with the benchmarks' documented settings. */
    public static final Profile FULL = new Profile("full", 1, 3, 1000, 5, 1000, Map.of());

    /** The profile called {@code name} ({@code quick} or {@code full}). */
    public static Profile named(String name) {
        return switch (name.toLowerCase(Locale.ROOT)) {
            case "quick" -> QUICK;
            case "full" -> FULL;
            default -> throw new IllegalArgumentException("profile: expected quick or full, got '" + name + "'");
        };
    }

    /** A one-line description for the report. */
    public String describe() {
        StringBuilder s = new StringBuilder(String.format(Locale.ROOT,
                "%s: %d fork(s), %d × %d ms warm-up, %d × %d ms measurement, sample-time mode", name, forks,
                warmupIterations, warmupMillis, measurementIterations, measurementMillis));
        if (params.isEmpty()) {
            s.append(", full grid");
        } else {
            params.forEach((k, v) -> s.append(", ").append(k).append(" ∈ {").append(String.join(", ", v)).append('}'));
        }
        return s.toString();
    }

    private static Map<String, String[]> params(Object... kv) {
        Map<String, String[]> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], (String[]) kv[i + 1]);
        }
        return m;
    }
}
