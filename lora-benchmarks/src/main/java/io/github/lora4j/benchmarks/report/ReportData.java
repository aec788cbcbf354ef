package io.github.lora4j.benchmarks.report;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;

/**
 * Everything a report is rendered from: the environment, the exact-merge memory records and JMH's own JSON
 * results. Stored as one JSON object {@code {"environment": {...}, "exactMergeMemory": [...], "jmh": [...]}};
 * {@link #read} also accepts a bare JMH result array (environment and memory then empty).
 *
 * @param environment  machine, JDK, ND4J/BLAS and thread settings, profile settings; insertion-ordered
 * @param memory       exact-merge memory per shape
 * @param jmh          JMH's result array, unchanged
 * @param measurements {@code jmh} parsed into medians
 */
public record ReportData(Map<String, String> environment, List<ExactMergeMemory> memory, ArrayNode jmh,
        List<Measurement> measurements) {

    private static final ObjectMapper JSON = new ObjectMapper();

    /** Builds the data from its parts, parsing {@code jmh}. */
    public static ReportData of(Map<String, String> environment, List<ExactMergeMemory> memory, ArrayNode jmh) {
        return new ReportData(Collections.unmodifiableMap(new LinkedHashMap<>(environment)), List.copyOf(memory), jmh,
                parse(jmh));
    }

    /** Reads a report JSON (or a bare JMH result array). */
    public static ReportData read(Path file) throws IOException {
        JsonNode root = JSON.readTree(file.toFile());
        if (root == null) {
            throw new IOException(file + ": expected a JSON object or array, got an empty file");
        }
        if (root.isArray()) {
            return of(Map.of(), List.of(), (ArrayNode) root);
        }
        JsonNode jmh = root.get("jmh");
        if (!root.isObject() || jmh == null || !jmh.isArray()) {
            throw new IOException(file + ": expected a JMH result array or an object with a \"jmh\" array");
        }
        Map<String, String> env = new LinkedHashMap<>();
        JsonNode e = root.path("environment");
        for (Map.Entry<String, JsonNode> f : e.properties()) {
            env.put(f.getKey(), f.getValue().asText());
        }
        List<ExactMergeMemory> memory = new ArrayList<>();
        for (JsonNode m : root.path("exactMergeMemory")) {
            // Results before non-square shapes recorded one "size" (in = out).
            int in = m.has("in") ? m.path("in").asInt() : m.path("size").asInt();
            int out = m.has("out") ? m.path("out").asInt() : m.path("size").asInt();
            memory.add(new ExactMergeMemory(in, out, m.path("rank").asInt(),
                    m.path("relativeUpdate").asDouble(), m.path("recordBytes").asLong(), m.path("weightBytes").asLong(),
                    m.path("inexact").asLong(-1)));
        }
        return of(env, memory, (ArrayNode) jmh);
    }

    /** Writes this data as pretty-printed JSON. */
    public void write(Path file) throws IOException {
        ObjectNode root = JSON.createObjectNode();
        ObjectNode env = root.putObject("environment");
        environment.forEach(env::put);
        ArrayNode mem = root.putArray("exactMergeMemory");
        for (ExactMergeMemory m : memory) {
            ObjectNode o = mem.addObject();
            o.put("in", m.in());
            o.put("out", m.out());
            o.put("rank", m.rank());
            o.put("relativeUpdate", m.relativeUpdate());
            o.put("recordBytes", m.recordBytes());
            o.put("weightBytes", m.weightBytes());
            o.put("inexact", m.inexact());
        }
        root.set("jmh", jmh);
        JSON.writerWithDefaultPrettyPrinter().writeValue(file.toFile(), root);
    }

    /** The measurement of {@code benchmark} whose parameters include every {@code key, value} pair, if any. */
    public Optional<Measurement> find(String benchmark, String... keyValues) {
        return measurements.stream().filter(m -> m.matches(benchmark, keyValues)).findFirst();
    }

    /** The median in µs of the matching measurement, or NaN when there is none. */
    public double median(String benchmark, String... keyValues) {
        return find(benchmark, keyValues).map(Measurement::medianUs).orElse(Double.NaN);
    }

    /** Distinct values of integer parameter {@code name} over all measurements of {@code benchmark}, ascending. */
    public List<Integer> values(String benchmark, String name) {
        return measurements.stream().filter(m -> m.benchmark().equals(benchmark)).map(m -> m.intParam(name))
                .filter(v -> v >= 0).distinct().sorted().toList();
    }

    /**
     * Distinct shapes {@code {in, out}} over all measurements whose benchmark starts with {@code prefix}, ordered
     * by {@code in·out}, then {@code in}.
     */
    public List<int[]> shapes(String prefix) {
        List<int[]> out = new ArrayList<>();
        for (Measurement m : measurements) {
            int in = m.intParam("in");
            int o = m.intParam("out");
            if (m.benchmark().startsWith(prefix) && in > 0 && o > 0
                    && out.stream().noneMatch(s -> s[0] == in && s[1] == o)) {
                out.add(new int[] {in, o});
            }
        }
        out.sort(java.util.Comparator.comparingLong((int[] s) -> (long) s[0] * s[1]).thenComparingInt(s -> s[0]));
        return out;
    }

    private static List<Measurement> parse(ArrayNode jmh) {
        List<Measurement> out = new ArrayList<>();
        for (JsonNode r : jmh) {
            String full = r.path("benchmark").asText();
            int method = full.lastIndexOf('.');
            int cls = full.lastIndexOf('.', method - 1);
            String name = full.substring(cls + 1);
            Map<String, String> params = new LinkedHashMap<>();
            for (Map.Entry<String, JsonNode> f : r.path("params").properties()) {
                if (f.getKey().equals("size")) {
                    // Results before non-square shapes: one "size" for in = out.
                    params.put("in", f.getValue().asText());
                    params.put("out", f.getValue().asText());
                } else {
                    params.put(f.getKey(), f.getValue().asText());
                }
            }
            JsonNode pm = r.path("primaryMetric");
            double toUs = microsPer(pm.path("scoreUnit").asText("us/op"));
            JsonNode median = pm.path("scorePercentiles").path("50.0");
            double score = pm.path("score").asDouble(Double.NaN);
            double error = pm.path("scoreError").asDouble(Double.NaN);
            long samples = 0;
            List<Double> forkMedians = new ArrayList<>();
            // sample-time mode: rawDataHistogram[fork][iteration] = [[value, count], ...]
            for (JsonNode fork : pm.path("rawDataHistogram")) {
                TreeMap<Double, Long> counts = new TreeMap<>();
                for (JsonNode iteration : fork) {
                    for (JsonNode bucket : iteration) {
                        samples += bucket.path(1).asLong();
                        counts.merge(bucket.path(0).asDouble(), bucket.path(1).asLong(), Long::sum);
                    }
                }
                if (!counts.isEmpty()) {
                    forkMedians.add(weightedMedian(counts) * toUs);
                }
            }
            if (samples == 0) {
                // average-time and other modes: rawData[fork] = [iteration score, ...]
                for (JsonNode fork : pm.path("rawData")) {
                    samples += fork.size();
                    TreeMap<Double, Long> counts = new TreeMap<>();
                    fork.forEach(v -> counts.merge(v.asDouble(), 1L, Long::sum));
                    if (!counts.isEmpty()) {
                        forkMedians.add(weightedMedian(counts) * toUs);
                    }
                }
            }
            out.add(new Measurement(name, Collections.unmodifiableMap(params),
                    (median.isMissingNode() ? score : median.asDouble()) * toUs, score * toUs, error * toUs, samples,
                    forkMedians));
        }
        return Collections.unmodifiableList(out);
    }

    /**
     * The lower median of values with counts: the smallest value whose cumulative count reaches half the total.
     */
    static double weightedMedian(TreeMap<Double, Long> counts) {
        long total = counts.values().stream().mapToLong(Long::longValue).sum();
        long seen = 0;
        for (Map.Entry<Double, Long> e : counts.entrySet()) {
            seen += e.getValue();
            if (2 * seen >= total) {
                return e.getKey();
            }
        }
        throw new IllegalArgumentException("weightedMedian: expected at least one count, got none");
    }

    /** Microseconds per unit of a JMH time unit like {@code "us/op"}. */
    static double microsPer(String unit) {
        String u = unit.contains("/") ? unit.substring(0, unit.indexOf('/')) : unit;
        return switch (u) {
            case "ns" -> 1e-3;
            case "us" -> 1.0;
            case "ms" -> 1e3;
            case "s" -> 1e6;
            default -> throw new IllegalArgumentException("unit: expected ns, us, ms or s per op, got " + unit);
        };
    }
}
