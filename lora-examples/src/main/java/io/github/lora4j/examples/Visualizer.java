package io.github.lora4j.examples;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.lora4j.examples.ParameterSavings.Shape;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.LocalDate;
import java.time.ZoneOffset;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Writes {@code lora-visualizer.html}: one self-contained page (no network, works from {@code file://}) with sliders
 * for the rank r (1–16) and for d and k, the diagram {@code h = (W + BA)x} with A and B sized by r, the parameter
 * counts full vs LoRA, the savings, the largest rank keeping 99 % savings, and, where a benchmark report exists, the
 * measured unmerged/merged forward time of the nearest benchmarked shape with its source.
 *
 * <p>The page computes the counts with a line-by-line port of {@link io.github.lora4j.LoraMath};
 * {@code VisualizerTest} drives it in headless Chromium and checks every number it shows against {@code LoraMath}.
 * The measured overheads are read here, when the page is generated, from {@code lora-benchmarks/results/*}
 * ({@code report.json}, else {@code jmh-result.json}), the newest run for each shape (see {@link #readOverheads}),
 * and written into the page.
 */
public final class Visualizer {

    /** File name of the page. */
    public static final String FILE = "lora-visualizer.html";

    private static final String TEMPLATE = "lora-visualizer.html";
    private static final String PLACEHOLDER = "/*LORA_DATA*/";
    private static final ObjectMapper JSON = new ObjectMapper();
    /** A results folder's date prefix, {@code 2026-12-02-full}: the date, then the end or a non-digit. */
    private static final Pattern DATE_PREFIX = Pattern.compile("^(\\d{4}-\\d{2}-\\d{2})(?:$|[^0-9])");

    private Visualizer() {
    }

    /**
     * The measured ratio {@code unmerged / merged} of the forward pass for one shape, rank and batch.
     *
     * @param source  where it was read, relative to the project root when possible
     * @param profile the benchmark profile as the report names it (may be empty)
     * @param in      input features k
     * @param out     output features d
     * @param rank    r
     * @param batch   rows n
     * @param ratio   median unmerged time / median merged time
     * @param low     the ratio's lower end: each median moved by JMH's relative score error, the worst way
     * @param high    the ratio's upper end
     */
    public record Overhead(String source, String profile, int in, int out, int rank, int batch, double ratio,
            double low, double high) {
    }

    /**
     * The slider stops of d and k: powers of two from 64 to 32,768 and the sizes of real model layers.
     *
     * @return ascending, without duplicates
     */
    public static List<Integer> dimensions() {
        TreeSet<Integer> dims = new TreeSet<>();
        for (int p = 64; p <= 32_768; p *= 2) {
            dims.add(p);
        }
        // GPT-2 (768, 3072), LLaMA-7B (11008), LLaMA-13B (5120, 13824), Mistral-7B (14336), LLaMA-70B (28672)
        dims.addAll(List.of(768, 1536, 3072, 5120, 11008, 13824, 14336, 28672));
        return List.copyOf(dims);
    }

    /**
     * Writes the page.
     *
     * @param file      where to write it (its folder is created if missing)
     * @param presets   the shapes of the preset menu
     * @param initial   the shape and rank the page opens with (also the page's default without {@code #d=..&k=..&r=..})
     * @param rank      the initial rank, 1..16
     * @param overheads measured overheads to show, one run per shape as {@link #readOverheads} gives them (where two
     *                  entries share shape, rank and batch, the page shows the first); may be empty
     * @return {@code file}
     * @throws IOException if the template cannot be read or the page not written
     */
    public static Path write(Path file, List<Shape> presets, Shape initial, int rank, List<Overhead> overheads)
            throws IOException {
        ObjectNode data = JSON.createObjectNode();
        ArrayNode dims = data.putArray("dimensions");
        dimensions().forEach(dims::add);
        ArrayNode p = data.putArray("presets");
        for (Shape s : presets) {
            p.addObject().put("name", s.name()).put("d", s.d()).put("k", s.k());
        }
        data.putObject("initial").put("d", initial.d()).put("k", initial.k()).put("r", Math.max(1, Math.min(16, rank)));
        ArrayNode o = data.putArray("overheads");
        for (Overhead m : overheads) {
            o.addObject().put("source", m.source()).put("profile", m.profile()).put("in", m.in()).put("out", m.out())
                    .put("rank", m.rank()).put("batch", m.batch()).put("ratio", m.ratio()).put("low", m.low())
                    .put("high", m.high());
        }
        String template;
        try (InputStream in = Visualizer.class.getResourceAsStream(TEMPLATE)) {
            if (in == null) {
                throw new IOException("resource " + TEMPLATE + " is missing from the examples' class path");
            }
            template = new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
        // "</" inside the JSON would close the script element early.
        String json = JSON.writeValueAsString(data).replace("</", "<\\/");
        Path parent = file.toAbsolutePath().getParent();
        Files.createDirectories(parent);
        Files.writeString(file, template.replace(PLACEHOLDER, json), StandardCharsets.UTF_8);
        return file;
    }

    /**
     * The benchmark results folder of this project, {@code lora-benchmarks/results}, found from the examples'
     * output folder ({@code <root>/lora-examples/target/examples}); it may not exist.
     *
     * @return the folder
     */
    public static Path resultsDirectory() {
        Path examples = ExampleOutput.directory();
        Path root = examples.getParent() == null || examples.getParent().getParent() == null ? Path.of("")
                : examples.getParent().getParent().getParent();
        return (root == null ? Path.of("") : root).resolve("lora-benchmarks").resolve("results");
    }

    /**
     * Reads the forward overheads of the reports under {@code results}: each sub-folder's {@code report.json}, or
     * its {@code jmh-result.json} when there is no report. Folders without forward results add nothing.
     *
     * <p>Where several runs measured the same shape ({@code in}, {@code out}, rank), only the <b>newest</b> run's
     * results for that shape are kept, so the page never shows a superseded measurement beside, or instead of, the
     * current one. A run's date is the report's own {@code environment."date (UTC)"} (an ISO-8601 instant, written
     * by {@code BenchmarkReport}); without one (a bare {@code jmh-result.json}, or a date that does not parse) it is
     * the folder name's {@code YYYY-MM-DD} prefix, read as the start of that day in UTC; a folder with neither is
     * older than every dated run. Of two runs with the same date, the folder whose name sorts last is the newer.
     * Shapes that only an older run measured keep that run's results.
     *
     * @param results the results folder; a missing one gives an empty list
     * @return the kept overheads, newest run first, then as each report lists them
     * @throws IOException if a file exists but cannot be read as JSON
     */
    public static List<Overhead> readOverheads(Path results) throws IOException {
        if (!Files.isDirectory(results)) {
            return new ArrayList<>();
        }
        List<Path> dirs = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(results, Files::isDirectory)) {
            ds.forEach(dirs::add);
        }
        List<Run> runs = new ArrayList<>();
        for (Path dir : dirs) {
            Path file = Files.isRegularFile(dir.resolve("report.json")) ? dir.resolve("report.json")
                    : dir.resolve("jmh-result.json");
            if (Files.isRegularFile(file)) {
                String folder = dir.getFileName().toString();
                JsonNode root = JSON.readTree(file.toFile());
                String source = "lora-benchmarks/results/" + folder + "/" + file.getFileName();
                runs.add(new Run(folder, runDate(root, folder), overheads(root, source)));
            }
        }
        runs.sort(Comparator.comparing(Run::date, Comparator.nullsLast(Comparator.reverseOrder()))
                .thenComparing(Run::folder, Comparator.reverseOrder()));
        List<Overhead> out = new ArrayList<>();
        Set<String> taken = new HashSet<>();
        for (Run run : runs) {
            Set<String> shapes = new HashSet<>();
            for (Overhead o : run.overheads()) {
                String shape = o.in() + "x" + o.out() + "/r" + o.rank();
                if (!taken.contains(shape)) {
                    shapes.add(shape);
                    out.add(o);
                }
            }
            taken.addAll(shapes);
        }
        return out;
    }

    /** One results folder's overheads and the date that orders it against the others ({@code null}: undated). */
    private record Run(String folder, Instant date, List<Overhead> overheads) {
    }

    /**
     * When a run was taken: its report's {@code "date (UTC)"}, else the folder's {@code YYYY-MM-DD} prefix at the
     * start of that day (UTC), else {@code null}.
     */
    static Instant runDate(JsonNode root, String folder) {
        String reported = root.path("environment").path("date (UTC)").asText("");
        try {
            return Instant.parse(reported);
        } catch (DateTimeParseException notAnInstant) {
            // fall through to the folder's name
        }
        Matcher m = DATE_PREFIX.matcher(folder);
        if (m.find()) {
            try {
                return LocalDate.parse(m.group(1)).atStartOfDay(ZoneOffset.UTC).toInstant();
            } catch (DateTimeParseException notADate) {
                return null;
            }
        }
        return null;
    }

    /**
     * The forward overheads in one report ({@code {"environment": .., "jmh": [..]}}) or bare JMH result array.
     *
     * @param root   the parsed file
     * @param source what to name as the source
     * @return one entry per unmerged forward result whose merged counterpart (same shape and batch) exists
     */
    static List<Overhead> overheads(JsonNode root, String source) {
        JsonNode jmh = root.isArray() ? root : root.path("jmh");
        String profile = root.path("environment").path("profile").asText("");
        int colon = profile.indexOf(':');
        String date = root.path("environment").path("date (UTC)").asText("");
        String what = (colon > 0 ? profile.substring(0, colon) + " profile" : profile)
                + (date.length() >= 10 ? ", " + date.substring(0, 10) : "");
        Map<String, JsonNode> merged = new HashMap<>();
        List<JsonNode> unmerged = new ArrayList<>();
        for (JsonNode r : jmh) {
            String b = r.path("benchmark").asText();
            if (b.endsWith("ForwardBenchmark.merged")) {
                merged.put(key(r), r);
            } else if (b.endsWith("ForwardBenchmark.unmerged")) {
                unmerged.add(r);
            }
        }
        List<Overhead> out = new ArrayList<>();
        for (JsonNode u : unmerged) {
            JsonNode m = merged.get(key(u));
            if (m == null) {
                continue;
            }
            double[] um = medianAndRelativeError(u);
            double[] mm = medianAndRelativeError(m);
            JsonNode p = u.path("params");
            out.add(new Overhead(source, what, dim(p, "in"), dim(p, "out"), p.path("rank").asInt(),
                    p.path("batch").asInt(), um[0] / mm[0], um[0] * (1 - um[1]) / (mm[0] * (1 + mm[1])),
                    um[0] * (1 + um[1]) / (mm[0] * (1 - mm[1]))));
        }
        return out;
    }

    /** {@code in} or {@code out}, or the older results' {@code size} (in = out). */
    private static int dim(JsonNode params, String name) {
        return params.has(name) ? params.path(name).asInt() : params.path("size").asInt();
    }

    private static String key(JsonNode r) {
        JsonNode p = r.path("params");
        return dim(p, "in") + "/" + dim(p, "out") + "/" + p.path("batch").asText();
    }

    /** JMH's median (its 50th percentile, else the score) and its relative error, {@code scoreError / score}. */
    private static double[] medianAndRelativeError(JsonNode r) {
        JsonNode pm = r.path("primaryMetric");
        double score = pm.path("score").asDouble(Double.NaN);
        double median = pm.path("scorePercentiles").path("50.0").asDouble(score);
        double error = pm.path("scoreError").asDouble(0);
        return new double[] {median, Double.isNaN(error) || !(score > 0) ? 0 : Math.abs(error / score)};
    }
}
