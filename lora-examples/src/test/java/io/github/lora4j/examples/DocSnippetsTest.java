package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Keeps the README and the guides in {@code docs/} true to the code: the one snippet check of the repository.
 *
 * <p>The rule, for every page ({@code README.md} and {@code docs/*.md}):
 * <ul>
 *   <li>every {@code ```java} block is a <em>region</em> of a Java source that the build compiles (a test, an example
 *       or main code; tests run it): the lines between {@code // <page>: <name>} (or {@code // <page>}, or several
 *       pages separated by {@code ", "}) and {@code // end}, compared line by line after removing the common
 *       indentation and trailing blanks;</li>
 *   <li>every region appears as a block of the page it names, and that page exists;</li>
 *   <li>every {@code ```xml} block naming an {@code io.github.lora4j} artifact names a module of this build, at the
 *       build's version;</li>
 *   <li>every {@code -Dexample=<class>} names an example that exists, and every {@code -pl} list names modules of
 *       this build;</li>
 *   <li>every relative link reaches a file of the repository.</li>
 * </ul>
 * A change of API that breaks a page's snippet therefore fails to compile (the region) or fails here (the page).
 */
class DocSnippetsTest {

    private static final String PAGE = "(?:README|docs/[\\w.-]+)\\.md";
    private static final Pattern REGION_START = Pattern.compile("^\\s*// (" + PAGE + "(?:, " + PAGE + ")*)(?::.*)?$");
    private static final Pattern REGION_END = Pattern.compile("^\\s*// end\\s*$");

    /** A fenced block of a page: its language, first line number (1-based) and normalised text. */
    record Block(String page, int line, String lang, String text) {
    }

    /** A marked region of a Java source, shown by one page or several. */
    record Region(Path source, int line, List<String> pages, String text) {
    }

    static Path root() {
        Path here = Path.of(System.getProperty("basedir", System.getProperty("user.dir"))).toAbsolutePath();
        for (Path p = here; p != null; p = p.getParent()) {
            if (Files.isRegularFile(p.resolve("README.md")) && Files.isDirectory(p.resolve("lora-core"))) {
                return p;
            }
        }
        throw new IllegalStateException("no repository root (README.md beside lora-core/) above " + here);
    }

    static List<String> pages(Path root) throws IOException {
        List<String> pages = new ArrayList<>(List.of("README.md"));
        try (Stream<Path> docs = Files.list(root.resolve("docs"))) {
            docs.filter(p -> p.toString().endsWith(".md")).sorted()
                    .forEach(p -> pages.add("docs/" + p.getFileName()));
        }
        return pages;
    }

    /**
     * A block or region as compared: the common indentation removed, trailing blanks and the empty lines at both ends
     * dropped. Indentation within the block and empty lines inside it count.
     */
    static String normalise(List<String> lines) {
        int indent = lines.stream().filter(l -> !l.isBlank()).mapToInt(l -> l.length() - l.stripLeading().length())
                .min().orElse(0);
        List<String> out = new ArrayList<>();
        for (String l : lines) {
            out.add(l.isBlank() ? "" : l.substring(indent).stripTrailing());
        }
        while (!out.isEmpty() && out.get(0).isEmpty()) {
            out.remove(0);
        }
        while (!out.isEmpty() && out.get(out.size() - 1).isEmpty()) {
            out.remove(out.size() - 1);
        }
        return String.join("\n", out);
    }

    static List<Block> blocks(String page, List<String> lines) {
        List<Block> out = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            String l = lines.get(i).strip();
            if (l.startsWith("```") && l.length() > 3) {
                String lang = l.substring(3).strip();
                List<String> body = new ArrayList<>();
                int j = i + 1;
                while (j < lines.size() && !lines.get(j).strip().equals("```")) {
                    body.add(lines.get(j));
                    j++;
                }
                if (j == lines.size()) {
                    throw new AssertionError(page + ":" + (i + 1) + ": a ```" + lang + " block is never closed");
                }
                out.add(new Block(page, i + 1, lang, normalise(body)));
                i = j;
            }
        }
        return out;
    }

    static List<Region> regions(Path root) throws IOException {
        List<Path> sources;
        try (Stream<Path> all = Files.walk(root)) {
            sources = all.filter(p -> p.toString().endsWith(".java"))
                    .filter(p -> {
                        String rel = root.relativize(p).toString().replace('\\', '/');
                        return rel.contains("/src/") && !rel.contains("/target/") && !rel.startsWith(".");
                    })
                    .sorted().collect(Collectors.toList());
        }
        List<Region> out = new ArrayList<>();
        for (Path source : sources) {
            List<String> lines = Files.readAllLines(source, StandardCharsets.UTF_8);
            for (int i = 0; i < lines.size(); i++) {
                Matcher m = REGION_START.matcher(lines.get(i));
                if (!m.matches()) {
                    continue;
                }
                List<String> body = new ArrayList<>();
                int j = i + 1;
                while (j < lines.size() && !REGION_END.matcher(lines.get(j)).matches()) {
                    if (REGION_START.matcher(lines.get(j)).matches()) {
                        throw new AssertionError(root.relativize(source) + ":" + (j + 1)
                                + ": a region starts inside the region of line " + (i + 1) + "; close it with // end");
                    }
                    body.add(lines.get(j));
                    j++;
                }
                if (j == lines.size()) {
                    throw new AssertionError(root.relativize(source) + ":" + (i + 1) + ": region for " + m.group(1)
                            + " has no // end");
                }
                out.add(new Region(source, i + 1, List.of(m.group(1).split(", ")), normalise(body)));
                i = j;
            }
        }
        return out;
    }

    static String read(Path p) {
        try {
            return Files.readString(p, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Every Java block of every page is a region of compiled code. */
    @Test
    void everyJavaBlockOfEveryPageIsCompiledCode() throws IOException {
        Path root = root();
        List<Region> regions = regions(root);
        List<String> problems = new ArrayList<>();
        int checked = 0;
        for (String page : pages(root)) {
            for (Block b : blocks(page, Files.readAllLines(root.resolve(page), StandardCharsets.UTF_8))) {
                if (!b.lang().equals("java")) {
                    continue;
                }
                checked++;
                boolean found = regions.stream().anyMatch(r -> r.pages().contains(page) && r.text().equals(b.text()));
                if (!found) {
                    String first = b.text().lines().findFirst().orElse("");
                    problems.add(page + ":" + b.line() + ": this ```java block (\"" + first + "\") is no region"
                            + " '// " + page + ": <name>' ... '// end' of a compiled source, or differs from it");
                }
            }
        }
        assertTrue(checked > 0, "no ```java block found at all under " + root);
        assertEquals(List.of(), problems, "pages whose Java is not compiled code");
    }

    /** Every region is shown by the page it names. */
    @Test
    void everyRegionIsShownByItsPage() throws IOException {
        Path root = root();
        List<String> pages = pages(root);
        List<String> problems = new ArrayList<>();
        List<Region> regions = regions(root);
        assertFalse(regions.isEmpty(), "no region found under " + root);
        for (Region r : regions) {
            String where = root.relativize(r.source()) + ":" + r.line();
            for (String page : r.pages()) {
                if (!pages.contains(page)) {
                    problems.add(where + ": names " + page + ", which does not exist");
                    continue;
                }
                List<Block> blocks = blocks(page, Files.readAllLines(root.resolve(page), StandardCharsets.UTF_8));
                if (blocks.stream().noneMatch(b -> b.lang().equals("java") && b.text().equals(r.text()))) {
                    problems.add(where + ": this region is not a ```java block of " + page
                            + " (copy it there, as it is here)");
                }
            }
        }
        assertEquals(List.of(), problems, "regions the pages do not show");
    }

    /** Dependency snippets name this build's modules at this build's version. */
    @Test
    void dependencySnippetsUseTheBuildsVersionAndModules() throws IOException {
        Path root = root();
        String version = buildVersion(root);
        Set<String> modules = modules(root);
        Pattern dep = Pattern.compile("<groupId>io\\.github\\.lora4j</groupId>\\s*<artifactId>([^<]+)</artifactId>"
                + "\\s*<version>([^<]+)</version>");
        List<String> problems = new ArrayList<>();
        int checked = 0;
        for (String page : pages(root)) {
            List<String> lines = Files.readAllLines(root.resolve(page), StandardCharsets.UTF_8);
            for (Block b : blocks(page, lines)) {
                if (!b.lang().equals("xml") || !b.text().contains("io.github.lora4j")) {
                    continue;
                }
                Matcher m = dep.matcher(b.text());
                int found = 0;
                while (m.find()) {
                    found++;
                    checked++;
                    if (!modules.contains(m.group(1))) {
                        problems.add(page + ":" + b.line() + ": artifact " + m.group(1) + " is no module of this build "
                                + modules);
                    }
                    if (!m.group(2).equals(version)) {
                        problems.add(page + ":" + b.line() + ": " + m.group(1) + " at " + m.group(2)
                                + ", the build is " + version);
                    }
                }
                if (found == 0) {
                    problems.add(page + ":" + b.line() + ": an io.github.lora4j dependency without groupId, artifactId"
                            + " and version in that order");
                }
            }
        }
        assertTrue(checked > 0, "no io.github.lora4j dependency snippet found: the README must show one");
        assertEquals(List.of(), problems);
    }

    /** Commands name examples and modules that exist. */
    @Test
    void commandsNameExamplesAndModulesThatExist() throws IOException {
        Path root = root();
        Set<String> modules = modules(root);
        Pattern example = Pattern.compile("-Dexample=((?:\\w+\\.)+[A-Z]\\w*)");
        Pattern pl = Pattern.compile("-pl ([\\w,:-]+)");
        List<String> problems = new ArrayList<>();
        for (String page : pages(root)) {
            String text = read(root.resolve(page));
            Matcher m = example.matcher(text);
            while (m.find()) {
                String cls = m.group(1);
                Path src = root.resolve("lora-examples/src/main/java/" + cls.replace('.', '/') + ".java");
                if (!Files.isRegularFile(src)) {
                    problems.add(page + ": -Dexample=" + cls + " names no example (" + root.relativize(src)
                            + " is missing)");
                }
            }
            Matcher p = pl.matcher(text);
            while (p.find()) {
                for (String module : p.group(1).split(",")) {
                    if (!module.isEmpty() && !modules.contains(module)) {
                        problems.add(page + ": -pl names " + module + ", no module of this build " + modules);
                    }
                }
            }
        }
        assertEquals(List.of(), problems);
    }

    /** Every relative link of every page reaches a file or folder of the repository. */
    @Test
    void relativeLinksReachFiles() throws IOException {
        Path root = root();
        Pattern link = Pattern.compile("\\]\\(([^)#\\s]+)(#[^)\\s]*)?\\)");
        List<String> problems = new ArrayList<>();
        int checked = 0;
        for (String page : pages(root)) {
            String prose = read(root.resolve(page)).replaceAll("(?s)```.*?```", "").replaceAll("`[^`\\n]*`", "");
            Matcher m = link.matcher(prose);
            while (m.find()) {
                String target = m.group(1);
                if (target.matches("^[a-z]+:.*")) {
                    continue;                     // https:, mailto:
                }
                checked++;
                Path resolved = root.resolve(page).getParent().resolve(target).normalize();
                if (!resolved.startsWith(root) || !Files.exists(resolved)) {
                    problems.add(page + ": link to " + target + " reaches nothing (" + resolved + ")");
                }
            }
        }
        assertTrue(checked > 0, "no relative link found");
        assertEquals(List.of(), problems);
    }

    /** CI runs the README's two set-up commands, as written there: a change to one must reach the other. */
    @Test
    void ciRunsTheReadmesTwoCommands() {
        Path root = root();
        List<String> ci = read(root.resolve(".ci/run")).lines().map(String::trim).toList();
        Pattern row = Pattern.compile("\\| (Run all tests|Run the main example)[^|]*\\| `([^`]+)` \\|");
        List<String> found = new ArrayList<>();
        for (String line : read(root.resolve("README.md")).lines().toList()) {
            Matcher m = row.matcher(line);
            if (m.find()) {
                found.add(m.group(1));
                assertTrue(ci.contains(m.group(2)), "README's '" + m.group(1) + "' command `" + m.group(2)
                        + "` is no line of .ci/run: keep the two in step");
            }
        }
        assertEquals(List.of("Run the main example", "Run all tests"), found,
                "README's set-up table must hold both rows, example first");
    }

    /** The checker itself: a block that differs from its region by one token is caught. */
    @Test
    void theCheckerSeesAOneTokenDifference() {
        List<String> page = List.of("text", "```java", "    int a = 1;", "", "    int b = 2;  ", "```");
        Block b = blocks("docs/x.md", page).get(0);
        assertEquals("int a = 1;\n\nint b = 2;", b.text());
        assertEquals(2, b.line());
        assertEquals(b.text(), normalise(List.of("        int a = 1;", "", "        int b = 2;")), "indentation");
        assertFalse(b.text().equals(normalise(List.of("int a = 1;", "", "int b = 3;"))), "one token");
        assertFalse(b.text().equals(normalise(List.of("int a = 1;", "", "  int b = 2;"))), "relative indentation");
    }

    static String buildVersion(Path root) {
        String pom = read(root.resolve("pom.xml"));
        Matcher m = Pattern.compile("<artifactId>lora4j-parent</artifactId>\\s*<version>([^<]+)</version>").matcher(pom);
        assertTrue(m.find(), "the root pom's version");
        return m.group(1);
    }

    static Set<String> modules(Path root) {
        Matcher m = Pattern.compile("<module>([^<]+)</module>").matcher(read(root.resolve("pom.xml")));
        Set<String> modules = new TreeSet<>();
        while (m.find()) {
            modules.add(m.group(1));
        }
        return modules;
    }
}
