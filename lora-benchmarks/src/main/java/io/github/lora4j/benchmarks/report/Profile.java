package io.github.lora4j.benchmarks.report;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * JMH settings of a report run.
 *
 * <ul>
 *   <li>{@link #QUICK}: in = out ∈ {1024, 4096}, r = 8, n ∈ {1, 64} (the shapes the targets name), all merge modes;
 *       2 × 0.5 s warm-up, 4 × 0.5 s measurement: 38 benchmarks (60 forks), about 5 minutes on 2 cores.</li>
 *   <li>{@link #FULL}: the whole grid (in = out ∈ {1024, 4096}, r ∈ {8, 64}, n ∈ {1, 8, 64, 512});
 *       3 × 1 s warm-up, 5 × 1 s measurement: 86 benchmarks (132 forks), about 23 minutes on 2 cores
 *       (~10.5 s per fork: ~2 s of start-up and set-up plus 8 s of iterations).</li>
 * </ul>
 * Both use sample-time mode, so every invocation is timed and medians are over all samples, and each benchmark's
 * own {@code @Fork}: 2 forks for the headline pairs ({@code ForwardBenchmark}, {@code MixedBatchBenchmark}), so
 * that run-to-run variance shows in the report, 1 for the others. {@code BenchmarkReport --shape} replaces the
 * shapes.
 *
 * @param name                  {@code quick} or {@code full}
 * @param forks                 JMH forks per benchmark; 0 keeps each benchmark's {@code @Fork}
 * @param warmupIterations      warm-up iterations per fork
 * @param warmupMillis          length of a warm-up iteration
 * @param measurementIterations measured iterations per fork
 * @param measurementMillis     length of a measured iteration
 * @param shapes                layer shapes {@code {in, out}} to run, one JMH run each
 * @param params                other parameter values that replace the benchmarks' own lists; empty for the full grid
 */
public record Profile(String name, int forks, int warmupIterations, long warmupMillis, int measurementIterations,
        long measurementMillis, List<int[]> shapes, Map<String, String[]> params) {

    /** The square shapes of the issues' targets: in = out ∈ {1024, 4096}. */
    public static final List<int[]> SQUARE = List.of(new int[] {1024, 1024}, new int[] {4096, 4096});

    /** A subset of the grid with short iterations. */
    public static final Profile QUICK = new Profile("quick", 0, 2, 500, 4, 500, SQUARE,
            params("rank", new String[] {"8"}, "batch", new String[] {"1", "64"}));

    /** The whole grid with the benchmarks' documented settings. */
    public static final Profile FULL = new Profile("full", 0, 3, 1000, 5, 1000, SQUARE, Map.of());

    /** Copies the shapes. */
    public Profile {
        shapes = shapes.stream().map(int[]::clone).toList();
    }

    /** This profile on other shapes. */
    public Profile withShapes(List<int[]> newShapes) {
        if (newShapes.isEmpty()) {
            throw new IllegalArgumentException("shapes: expected at least one, got none");
        }
        return new Profile(name, forks, warmupIterations, warmupMillis, measurementIterations, measurementMillis,
                newShapes, params);
    }

    /** Values of {@code rank} this profile runs ({@code 8, 64} when the benchmarks' own list applies). */
    public String[] ranks() {
        return params.getOrDefault("rank", new String[] {"8", "64"});
    }

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
                "%s: %s, %d × %d ms warm-up, %d × %d ms measurement, sample-time mode", name,
                forks == 0 ? "forks as annotated (2 for ForwardBenchmark and MixedBatchBenchmark, 1 otherwise)"
                        : forks + " fork(s)", warmupIterations, warmupMillis, measurementIterations,
                measurementMillis));
        s.append(", (in, out) ∈ {");
        for (int i = 0; i < shapes.size(); i++) {
            s.append(i == 0 ? "" : ", ").append('(').append(shapes.get(i)[0]).append(", ").append(shapes.get(i)[1])
                    .append(')');
        }
        s.append('}');
        if (params.isEmpty()) {
            s.append(", full grid of r and n");
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
