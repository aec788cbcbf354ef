package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.github.lora4j.LoraMath;
import io.github.lora4j.examples.ParameterSavings.Shape;
import java.awt.image.BufferedImage;
import java.io.File;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The visualizer page: self-contained, and every number it shows equal to {@link LoraMath}'s, checked in headless
 * Chromium (Debian's {@code chromium}) after loading shapes from the address and after moving the sliders by
 * script. Without Chromium the browser tests are skipped with the reason printed; the rest always run.
 */
class VisualizerTest {

    /** Pixels per rank of A's height and B's width in the page's diagram. */
    private static final int UNIT = 6;
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final java.util.concurrent.atomic.AtomicInteger RUNS = new java.util.concurrent.atomic.AtomicInteger();

    @TempDir
    static Path dir;

    private static Path page;
    private static List<Visualizer.Overhead> overheads;

    @BeforeAll
    static void writePage() throws IOException {
        overheads = Visualizer.overheads(JSON.readTree(report()), "lora-benchmarks/results/fixture/report.json");
        page = Visualizer.write(dir.resolve(Visualizer.FILE), ParameterSavings.SHAPES,
                new Shape("1024 x 1024", 1024, 1024), 8, overheads);
    }

    /** Two forward results per batch at 4096², r = 8 (medians 4,100 and 4,050 µs, errors 2 % of the score). */
    private static String report() {
        return report("\"2026-11-23T17:05:02Z\"", 4096, 4100, 4050, 13000, 12800);
    }

    /**
     * A report of the unmerged and merged forward at {@code size}², r = 8, n = 1 and 64, with the given medians (µs)
     * and errors of 2 % of the score.
     *
     * @param date the environment's {@code "date (UTC)"} as JSON, or {@code null} for a bare JMH array
     */
    private static String report(String date, int size, double unmerged1, double merged1, double unmerged64,
            double merged64) {
        StringBuilder jmh = new StringBuilder();
        for (Object[] r : new Object[][] {{"unmerged", "1", unmerged1}, {"merged", "1", merged1},
                {"unmerged", "64", unmerged64}, {"merged", "64", merged64}}) {
            double median = (Double) r[2];
            jmh.append(jmh.length() == 0 ? "" : ",").append(String.format(Locale.ROOT,
                    "{\"benchmark\": \"io.github.lora4j.benchmarks.ForwardBenchmark.%s\", \"params\": {\"batch\": \"%s\","
                            + " \"size\": \"%d\"%s}, \"primaryMetric\": {\"score\": %s, \"scoreError\": %s,"
                            + " \"scorePercentiles\": {\"50.0\": %s}, \"scoreUnit\": \"us/op\"}}",
                    r[0], r[1], size, r[0].equals("unmerged") ? ", \"rank\": \"8\"" : "", median * 1.05,
                    median * 1.05 * 0.02, median));
        }
        return date == null ? "[" + jmh + "]"
                : "{\"environment\": {\"date (UTC)\": " + date + ", \"profile\": \"full: 1 fork(s)\"}, \"jmh\": [" + jmh + "]}";
    }

    /** Writes {@code json} as {@code results/folder/file}, creating the folders. */
    private static void put(Path results, String folder, String file, String json) throws IOException {
        Files.createDirectories(results.resolve(folder));
        Files.writeString(results.resolve(folder).resolve(file), json);
    }

    /** Each overhead as "folder: in x out r rank n batch = ratio", for readable failures. */
    private static List<String> described(List<Visualizer.Overhead> read) {
        return read.stream().map(o -> o.source().replaceAll("^lora-benchmarks/results/|/[^/]+$", "") + ": " + o.in()
                + "x" + o.out() + " r" + o.rank() + " n" + o.batch() + String.format(Locale.ROOT, " = %.4f", o.ratio()))
                .toList();
    }

    // ---------------------------------------------------------------- without a browser

    @Test
    void thePageIsOneFileThatLoadsNothing() throws IOException {
        String html = Files.readString(page, StandardCharsets.UTF_8);
        for (String banned : List.of("<script src", "<link", "@import", "<iframe", "<img", "fetch(", "XMLHttpRequest",
                "import(", "https://")) {
            assertFalse(html.contains(banned), "the page must not load anything, but it contains " + banned);
        }
        // The only address is SVG's namespace name, an identifier that is never fetched.
        Matcher m = Pattern.compile("http://[^\"' ]*").matcher(html);
        while (m.find()) {
            assertEquals("http://www.w3.org/2000/svg", m.group());
        }
        assertFalse(html.contains("/*LORA_DATA*/"), "the data placeholder is replaced");
    }

    @Test
    void overheadsAreMedianRatiosWithRangesFromTheScoreErrors() {
        assertEquals(2, overheads.size());
        Visualizer.Overhead o = overheads.get(0);
        assertEquals(List.of(4096, 4096, 8, 1), List.of(o.in(), o.out(), o.rank(), o.batch()), "size is in = out");
        assertEquals(4100.0 / 4050.0, o.ratio(), 1e-12);
        assertEquals(4100 * 0.98 / (4050 * 1.02), o.low(), 1e-12);
        assertEquals(4100 * 1.02 / (4050 * 0.98), o.high(), 1e-12);
        assertEquals("full profile, 2026-11-23", o.profile());
        assertEquals("lora-benchmarks/results/fixture/report.json", o.source());
    }

    @Test
    void resultsFoldersAreReadReportFirstAndMissingOnesGiveNothing() throws IOException {
        Path results = dir.resolve("results");
        put(results, "a-run", "report.json", report());
        // beside its report, a raw result that must not be read: report.json comes first
        put(results, "a-run", "jmh-result.json", report(null, 4096, 9000, 4000, 9000, 4000));
        // b-raw: a bare JMH array alone, of another shape (so that the newer run does not replace it)
        put(results, "b-raw", "jmh-result.json", report(null, 1024, 41, 40, 130, 128));
        Files.createDirectories(results.resolve("c-empty"));
        List<Visualizer.Overhead> read = Visualizer.readOverheads(results);
        assertEquals(List.of("lora-benchmarks/results/a-run/report.json", "lora-benchmarks/results/a-run/report.json",
                "lora-benchmarks/results/b-raw/jmh-result.json", "lora-benchmarks/results/b-raw/jmh-result.json"),
                read.stream().map(Visualizer.Overhead::source).toList());
        assertEquals(4100.0 / 4050.0, read.get(0).ratio(), 1e-12, "a-run's report, not its raw result");
        assertEquals("", read.get(2).profile(), "a bare JMH array names no profile");
        assertEquals(List.of(), Visualizer.readOverheads(dir.resolve("no-such-folder")));
    }

    // ---------------------------------------------------------------- the newest run of each shape

    @Test
    void ofTwoRunsOfOneShapeTheNewestIsReadNotTheFirstFolderByName() throws IOException {
        Path results = dir.resolve("two-runs");
        // the old run (unmerged/merged 2.65 at n = 1, as in the stale screenshot) sorts first by name
        put(results, "2026-11-23-full", "report.json", report("\"2026-11-23T17:05:02Z\"", 4096, 10600, 4000, 26000, 12800));
        put(results, "2026-12-02-full", "report.json", report("\"2026-12-02T17:22:34.884063205Z\"", 4096, 4100, 4050,
                13000, 12800));
        List<Visualizer.Overhead> read = Visualizer.readOverheads(results);
        assertEquals(List.of("2026-12-02-full: 4096x4096 r8 n1 = 1.0123", "2026-12-02-full: 4096x4096 r8 n64 = 1.0156"),
                described(read), "only the newest run of a shape is kept");
        assertEquals("full profile, 2026-12-02", read.get(0).profile());
    }

    @Test
    void theReportsOwnDateOutranksTheFolderName() throws IOException {
        Path results = dir.resolve("dated-reports");
        // named as if newest, but its report says it ran first
        put(results, "2026-12-09-copy", "report.json", report("\"2026-11-23T17:05:02Z\"", 4096, 10600, 4000, 26000, 12800));
        put(results, "2026-12-02-full", "report.json", report("\"2026-12-02T17:22:34Z\"", 4096, 4100, 4050, 13000, 12800));
        // no date in its name, the newest date in its report
        put(results, "zen4-rerun", "report.json", report("\"2026-12-03T09:00:00Z\"", 1024, 52, 50, 520, 500));
        put(results, "1024-old", "report.json", report("\"2026-12-01T09:00:00Z\"", 1024, 99, 50, 990, 500));
        assertEquals(List.of("zen4-rerun: 1024x1024 r8 n1 = 1.0400", "zen4-rerun: 1024x1024 r8 n64 = 1.0400",
                "2026-12-02-full: 4096x4096 r8 n1 = 1.0123", "2026-12-02-full: 4096x4096 r8 n64 = 1.0156"),
                described(Visualizer.readOverheads(results)));
    }

    @Test
    void withoutADateInTheReportTheFolderPrefixDatesTheRunAndUndatedRunsAreOldest() throws IOException {
        Path results = dir.resolve("folder-dates");
        put(results, "2026-12-02-full", "report.json", report("\"2026-12-02T17:22:34Z\"", 4096, 4100, 4050, 13000, 12800));
        put(results, "2026-12-05-raw", "jmh-result.json", report(null, 4096, 4200, 4000, 13200, 12000));
        put(results, "zz-undated", "jmh-result.json", report(null, 4096, 9000, 4000, 9000, 4000));
        assertEquals(List.of("2026-12-05-raw: 4096x4096 r8 n1 = 1.0500", "2026-12-05-raw: 4096x4096 r8 n64 = 1.1000"),
                described(Visualizer.readOverheads(results)));
        put(results, "2026-12-06-bad-date", "report.json", report("\"yesterday\"", 4096, 4400, 4000, 4800, 4000));
        assertEquals(List.of("2026-12-06-bad-date: 4096x4096 r8 n1 = 1.1000",
                "2026-12-06-bad-date: 4096x4096 r8 n64 = 1.2000"), described(Visualizer.readOverheads(results)),
                "a report date that does not parse: the folder's date");

        Path invalid = dir.resolve("invalid-prefix");
        put(invalid, "2026-01-01-old", "jmh-result.json", report(null, 4096, 4200, 4000, 13200, 12000));
        put(invalid, "2026-13-45-no-such-day", "jmh-result.json", report(null, 4096, 9000, 4000, 9000, 4000));
        assertEquals(List.of("2026-01-01-old: 4096x4096 r8 n1 = 1.0500", "2026-01-01-old: 4096x4096 r8 n64 = 1.1000"),
                described(Visualizer.readOverheads(invalid)), "a prefix that is no date leaves the run undated");
    }

    @Test
    void equalDatesGoToTheFolderSortingLast() throws IOException {
        Path results = dir.resolve("same-day");
        put(results, "2026-12-02-a", "jmh-result.json", report(null, 4096, 9000, 4000, 9000, 4000));
        put(results, "2026-12-02-b", "jmh-result.json", report(null, 4096, 4100, 4050, 13000, 12800));
        assertEquals(List.of("2026-12-02-b: 4096x4096 r8 n1 = 1.0123", "2026-12-02-b: 4096x4096 r8 n64 = 1.0156"),
                described(Visualizer.readOverheads(results)));
    }

    @Test
    void shapesThatOnlyAnOlderRunMeasuredKeepItsResults() throws IOException {
        Path results = dir.resolve("partial");
        put(results, "2026-11-23-full", "report.json", report("\"2026-11-23T17:05:02Z\"", 4096, 10600, 4000, 26000, 12800));
        put(results, "2026-11-24-small", "report.json", report("\"2026-11-24T10:00:00Z\"", 1024, 52, 50, 520, 500));
        put(results, "2026-12-02-full", "report.json", report("\"2026-12-02T17:22:34Z\"", 4096, 4100, 4050, 13000, 12800));
        assertEquals(List.of("2026-12-02-full: 4096x4096 r8 n1 = 1.0123", "2026-12-02-full: 4096x4096 r8 n64 = 1.0156",
                "2026-11-24-small: 1024x1024 r8 n1 = 1.0400", "2026-11-24-small: 1024x1024 r8 n64 = 1.0400"),
                described(Visualizer.readOverheads(results)));
    }

    @Test
    void dimensionsArePowersOfTwoAndRealShapes() {
        List<Integer> dims = Visualizer.dimensions();
        assertTrue(dims.containsAll(List.of(64, 128, 1024, 4096, 16384, 32768, 768, 3072, 11008)), dims.toString());
        for (int i = 1; i < dims.size(); i++) {
            assertTrue(dims.get(i - 1) < dims.get(i), "ascending, no duplicates: " + dims);
        }
    }

    // ---------------------------------------------------------------- in Chromium

    @Test
    void everyShownNumberEqualsLoraMathForShapesLoadedFromTheAddress() throws Exception {
        Path chromium = chromiumOrSkip();
        int[][] cases = {{1024, 1024, 8}, {11008, 4096, 16}, {4096, 11008, 1}, {64, 64, 16}, {768, 3072, 5},
            {32768, 32768, 16}};
        for (int[] c : cases) {
            String dom = dumpDom(chromium, "#d=" + c[0] + "&k=" + c[1] + "&r=" + c[2]);
            assertShows(dom, c[0], c[1], c[2]);
        }
    }

    @Test
    void movingTheSlidersUpdatesTheNumbersAndTheDiagram() throws Exception {
        Path chromium = chromiumOrSkip();
        String dom = dumpDom(chromium, "#d=1024&k=1024&r=8&move=r:3,k:11008,d:4096");
        assertEquals("r:3,k:11008,d:4096", element(dom, "state").attrs().get("data-moved"), "the script moved them");
        assertShows(dom, 4096, 11008, 3);
        dom = dumpDom(chromium, "#d=4096&k=4096&r=8&move=r:16");
        assertShows(dom, 4096, 4096, 16);
    }

    @Test
    void theNearestMeasuredShapeIsShownWithItsSource() throws Exception {
        Path chromium = chromiumOrSkip();
        String dom = dumpDom(chromium, "#d=11008&k=4096&r=16");
        Element shape = element(dom, "m-shape");
        assertEquals(List.of("4096", "4096", "8"), List.of(shape.attrs().get("data-in"), shape.attrs().get("data-out"),
                shape.attrs().get("data-rank")), "the only measured shape is the nearest");
        assertTrue(shape.text().startsWith("Nearest measured shape"), shape.text());
        Matcher rows = Pattern.compile("<tr class=\"m-row\" data-batch=\"(\\d+)\" data-ratio=\"([^\"]+)\">").matcher(dom);
        Map<Integer, Double> shown = new HashMap<>();
        while (rows.find()) {
            shown.put(Integer.parseInt(rows.group(1)), Double.parseDouble(rows.group(2)));
        }
        assertEquals(Map.of(1, overheads.get(0).ratio(), 64, overheads.get(1).ratio()), shown);
        assertTrue(dom.contains(String.format(Locale.ROOT, "<td>%.3f</td><td>[%.3f, %.3f]</td>", overheads.get(0).ratio(),
                overheads.get(0).low(), overheads.get(0).high())), "ratio and range printed");
        Matcher src = Pattern.compile("id=\"m-source\">(.*?)</p>", Pattern.DOTALL).matcher(dom);
        assertTrue(src.find(), "no source line in\n" + dom);
        String source = src.group(1).replaceAll("<[^>]+>", "");
        assertTrue(source.contains("lora-benchmarks/results/fixture/report.json") && source.contains("full profile"),
                source);
        assertTrue(element(dumpDom(chromium, "#d=4096&k=4096&r=8"), "m-shape").text()
                .startsWith("Measured at this shape"));
    }

    @Test
    void thePageShowsTheNewestRunOfAShape() throws Exception {
        Path chromium = chromiumOrSkip();
        Path results = dir.resolve("page-two-runs");
        put(results, "2026-11-23-full", "report.json", report("\"2026-11-23T17:05:02Z\"", 4096, 10600, 4000, 26000, 12800));
        put(results, "2026-12-02-full", "report.json", report("\"2026-12-02T17:22:34Z\"", 4096, 4100, 4050, 13000, 12800));
        Path twoRuns = Visualizer.write(dir.resolve("two-runs").resolve(Visualizer.FILE), ParameterSavings.SHAPES,
                new Shape("4096 x 4096", 4096, 4096), 8, Visualizer.readOverheads(results));
        String dom = dumpDom(chromium, twoRuns, "#d=4096&k=4096&r=8");
        Matcher rows = Pattern.compile("<tr class=\"m-row\" data-batch=\"(\\d+)\" data-ratio=\"([^\"]+)\">").matcher(dom);
        Map<Integer, Double> shown = new HashMap<>();
        while (rows.find()) {
            shown.put(Integer.parseInt(rows.group(1)), Double.parseDouble(rows.group(2)));
        }
        assertEquals(Map.of(1, 4100.0 / 4050.0, 64, 13000.0 / 12800.0), shown, "the 2026-12-02 run's ratios");
        Matcher src = Pattern.compile("id=\"m-source\">(.*?)</p>", Pattern.DOTALL).matcher(dom);
        assertTrue(src.find(), "no source line in\n" + dom);
        assertTrue(src.group(1).contains("lora-benchmarks/results/2026-12-02-full/report.json"), src.group(1));
    }

    @Test
    void aScreenshotShowsThePage() throws Exception {
        Path chromium = chromiumOrSkip();
        Path png = ExampleOutput.file("lora-visualizer-screenshot.png");
        Files.createDirectories(png.getParent());
        Files.deleteIfExists(png);
        run(chromium, List.of("--screenshot=" + png, "--window-size=1280,1000", url("#d=11008&k=4096&r=16")));
        BufferedImage img = ImageIO.read(png.toFile());
        assertEquals(1280, img.getWidth());
        assertEquals(1000, img.getHeight());
        Set<Integer> colours = new HashSet<>();
        for (int y = 0; y < img.getHeight(); y += 4) {
            for (int x = 0; x < img.getWidth(); x += 4) {
                colours.add(img.getRGB(x, y));
            }
        }
        assertTrue(colours.size() > 50, "a rendered page has many colours (text, boxes), got " + colours.size());
        System.out.println("VisualizerTest: screenshot written to " + png);
    }

    /** Checks counts, savings, the 99 % rank and the diagram's A and B for one state against LoraMath. */
    private static void assertShows(String dom, long d, long k, int r) {
        String at = d + " × " + k + ", r = " + r + ": ";
        Map<String, String> state = element(dom, "state").attrs();
        assertEquals(List.of(String.valueOf(d), String.valueOf(k), String.valueOf(r)),
                List.of(state.get("data-d"), state.get("data-k"), state.get("data-r")), at + "state");
        long full = LoraMath.fullParameters(d, k);
        long lora = LoraMath.loraParameters(d, k, r);
        assertEquals(String.format(Locale.ROOT, "%,d", full), element(dom, "full").text(), at + "full");
        assertEquals(String.valueOf(full), element(dom, "full").attrs().get("data-value"), at + "full value");
        assertEquals(String.format(Locale.ROOT, "%,d", lora), element(dom, "lora").text(), at + "LoRA");
        double trainable = 100.0 * LoraMath.overheadRatio(d, k, r);
        double savings = 100.0 * LoraMath.savings(d, k, r);
        assertEquals(trainable, Double.parseDouble(element(dom, "trainable").attrs().get("data-value")), at + "trainable");
        assertEquals(fixed(trainable, 3) + " %", element(dom, "trainable").text(), at + "trainable text");
        assertEquals(savings, Double.parseDouble(element(dom, "savings").attrs().get("data-value")), at + "savings");
        assertEquals(fixed(savings, 2) + " %", element(dom, "savings").text(), at + "savings text");
        int max99 = LoraMath.maxRankForSavings(d, k, 0.99);
        assertEquals(String.valueOf(max99), element(dom, "maxr99").attrs().get("data-value"), at + "99 % rank");
        assertEquals(max99 == 0 ? "none" : "r = " + max99, element(dom, "maxr99").text(), at + "99 % rank text");
        assertEquals(String.format(Locale.ROOT, "%,d trained", r * k), element(dom, "a-count").text(), at + "A");
        assertEquals(String.format(Locale.ROOT, "%,d trained", d * r), element(dom, "b-count").text(), at + "B");
        Map<String, String> a = element(dom, "boxA").attrs();
        Map<String, String> b = element(dom, "boxB").attrs();
        assertEquals(String.valueOf(UNIT * r), a.get("height"), at + "A's height grows with r");
        assertEquals(String.valueOf(UNIT * r), b.get("width"), at + "B's width grows with r");
        assertEquals(a.get("width"), element(dom, "boxW").attrs().get("width"), at + "A is as wide as W");
        assertEquals(b.get("height"), element(dom, "boxW").attrs().get("height"), at + "B is as tall as W");
    }

    /** JavaScript's {@code toFixed}: the exact binary value rounded half up to {@code digits} decimals. */
    private static String fixed(double v, int digits) {
        return new BigDecimal(v).setScale(digits, RoundingMode.HALF_UP).toPlainString();
    }

    /**
     * An element's attributes and text up to its first child tag.
     *
     * @param attrs attribute names to values, as Chromium serialises them
     * @param text  the text content before any child element, entities for {@code &}, {@code <}, {@code >} decoded
     */
    private record Element(Map<String, String> attrs, String text) {
    }

    private static Element element(String dom, String id) {
        Matcher m = Pattern.compile("<[a-zA-Z]+\\s[^>]*\\bid=\"" + Pattern.quote(id) + "\"[^>]*>([^<]*)").matcher(dom);
        assertTrue(m.find(), "no element with id " + id + " in\n" + dom);
        Map<String, String> attrs = new HashMap<>();
        Matcher a = Pattern.compile("([a-zA-Z-]+)=\"([^\"]*)\"").matcher(m.group());
        while (a.find()) {
            attrs.put(a.group(1), a.group(2).replace("&amp;", "&"));
        }
        String text = m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("&nbsp;", " ");
        return new Element(attrs, text);
    }

    private static String url(String hash) {
        return page.toUri() + hash;
    }

    private static String dumpDom(Path chromium, String hash) throws IOException, InterruptedException {
        return dumpDom(chromium, page, hash);
    }

    private static String dumpDom(Path chromium, Path file, String hash) throws IOException, InterruptedException {
        return run(chromium, List.of("--dump-dom", file.toUri() + hash));
    }

    /** Runs headless Chromium once (its own profile folder, no sandbox: tests run as root in CI); returns stdout. */
    private static String run(Path chromium, List<String> args) throws IOException, InterruptedException {
        Path profile = Files.createTempDirectory(dir, "chromium-profile");
        Path out = dir.resolve("chromium-" + RUNS.incrementAndGet() + ".out");
        Path err = dir.resolve("chromium.err");
        List<String> cmd = new java.util.ArrayList<>(List.of(chromium.toString(), "--headless", "--no-sandbox",
                "--disable-gpu", "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                "--user-data-dir=" + profile));
        cmd.addAll(args);
        Process p = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
        if (!p.waitFor(90, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new IOException("chromium did not finish in 90 s: " + cmd);
        }
        assertEquals(0, p.exitValue(), "chromium failed: " + cmd + "\n" + Files.readString(err));
        return Files.readString(out, StandardCharsets.UTF_8);
    }

    /** Debian's {@code chromium} on the PATH (or {@code -Dchromium=/path}); otherwise the test is skipped, saying why. */
    private static Path chromiumOrSkip() {
        String explicit = System.getProperty("chromium");
        Path found = explicit != null ? Path.of(explicit) : null;
        if (found == null) {
            for (String d : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
                Path c = Path.of(d.isEmpty() ? "." : d, "chromium");
                if (Files.isExecutable(c)) {
                    found = c;
                    break;
                }
            }
        }
        boolean usable = found != null && Files.isExecutable(found);
        if (!usable) {
            System.out.println("VisualizerTest: skipping the browser checks: no 'chromium' on the PATH "
                    + "(Debian: apt-get install chromium; or -Dchromium=/path/to/chromium)");
        }
        Assumptions.assumeTrue(usable, "no 'chromium' on the PATH: install Debian's chromium to run the browser checks");
        return found;
    }
}
