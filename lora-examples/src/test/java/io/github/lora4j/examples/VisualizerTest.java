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
        StringBuilder jmh = new StringBuilder();
        for (String[] r : new String[][] {{"unmerged", "1", "4100"}, {"merged", "1", "4050"},
                {"unmerged", "64", "13000"}, {"merged", "64", "12800"}}) {
            double median = Double.parseDouble(r[2]);
            jmh.append(jmh.length() == 0 ? "" : ",").append(String.format(Locale.ROOT,
                    "{\"benchmark\": \"io.github.lora4j.benchmarks.ForwardBenchmark.%s\", \"params\": {\"batch\": \"%s\","
                            + " \"size\": \"4096\"%s}, \"primaryMetric\": {\"score\": %s, \"scoreError\": %s,"
                            + " \"scorePercentiles\": {\"50.0\": %s}, \"scoreUnit\": \"us/op\"}}",
                    r[0], r[1], r[0].equals("unmerged") ? ", \"rank\": \"8\"" : "", median * 1.05, median * 1.05 * 0.02,
                    median));
        }
        return "{\"environment\": {\"date (UTC)\": \"2026-11-23T17:05:02Z\", \"profile\": \"full: 1 fork(s)\"},"
                + " \"jmh\": [" + jmh + "]}";
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
        Files.createDirectories(results.resolve("a-run"));
        Files.createDirectories(results.resolve("b-raw"));
        Files.createDirectories(results.resolve("c-empty"));
        Files.writeString(results.resolve("a-run/report.json"), report());
        JsonNode bare = JSON.readTree(report()).path("jmh");
        Files.writeString(results.resolve("b-raw/jmh-result.json"), bare.toString());
        List<Visualizer.Overhead> read = Visualizer.readOverheads(results);
        assertEquals(List.of("lora-benchmarks/results/a-run/report.json", "lora-benchmarks/results/a-run/report.json",
                "lora-benchmarks/results/b-raw/jmh-result.json", "lora-benchmarks/results/b-raw/jmh-result.json"),
                read.stream().map(Visualizer.Overhead::source).toList());
        assertEquals("", read.get(2).profile(), "a bare JMH array names no profile");
        assertEquals(List.of(), Visualizer.readOverheads(dir.resolve("no-such-folder")));
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
        return run(chromium, List.of("--dump-dom", url(hash)));
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
