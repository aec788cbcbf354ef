package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * docs/peft-parity.md shows only code that runs: each of its Java blocks is a region of a test, marked there by
 * {@code // docs/peft-parity.md: <name>} and {@code // end}, and every region appears in the page.
 */
class PeftParityGuideTest {

    private static final Path TESTS = Path.of("src", "test", "java", "io", "github", "lora4j");

    /** The files holding the regions, below {@link #TESTS}. */
    private static final List<String> SOURCES = List.of("RanksAboveMinTest.java", "train/EmbeddingTrainingTest.java",
            "model/TaskTypeTest.java", "model/MultiAdapterFolderTest.java");

    private static final Pattern REGION = Pattern.compile("\\n([ \\t]*)// docs/peft-parity\\.md: (\\S+)\\n(.*?)\\n[ \\t]*// end\\n",
            Pattern.DOTALL);
    private static final Pattern JAVA_BLOCK = Pattern.compile("\\n```java\\n(.*?)\\n```\\n", Pattern.DOTALL);

    /** Region name to its lines, each without the indentation of the region's marker. */
    private static Map<String, String> regions() throws IOException {
        Map<String, String> out = new TreeMap<>();
        for (String source : SOURCES) {
            Matcher m = REGION.matcher(Files.readString(TESTS.resolve(source)));
            while (m.find()) {
                String indent = m.group(1);
                StringBuilder body = new StringBuilder();
                for (String line : m.group(3).split("\n", -1)) {
                    body.append(line.startsWith(indent) ? line.substring(indent.length()) : line.strip()).append('\n');
                }
                assertEquals(null, out.put(m.group(2), body.toString()), "region " + m.group(2) + " twice");
            }
        }
        return out;
    }

    @Test
    void everyJavaBlockOfThePageIsARegionOfATestAndEveryRegionIsShown() throws IOException {
        Map<String, String> regions = regions();
        assertEquals(List.of("embedding-training", "multi-adapter", "ranks", "task-type"), List.copyOf(regions.keySet()));
        List<String> blocks = new ArrayList<>();
        Matcher m = JAVA_BLOCK.matcher(Files.readString(Path.of("..", "docs", "peft-parity.md")));
        while (m.find()) {
            blocks.add(m.group(1) + "\n");
        }
        for (String block : blocks) {
            assertTrue(regions.containsValue(block), "docs/peft-parity.md shows a Java block that is no region of "
                    + SOURCES + " (copy it from there):\n" + block);
        }
        for (Map.Entry<String, String> r : regions.entrySet()) {
            assertTrue(blocks.contains(r.getValue()), "region " + r.getKey() + " is missing from docs/peft-parity.md:\n"
                    + r.getValue());
        }
    }

    /** Prints the regions, to paste into the page. */
    public static void main(String[] args) throws IOException {
        regions().forEach((name, body) -> System.out.println("== " + name + "\n```java\n" + body + "```"));
    }
}
