package io.github.lora4j;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.train.LoraTrainer;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Adam;

/**
 * The code of docs/many-adapters.md, run as written there (the guide copies it from here), and a check that the guide
 * still shows each region verbatim.
 */
class ManyAdaptersGuideTest {

    @Test
    void theServingSnippetRuns() {
        INDArray w = gaussian(DataType.FLOAT, 1, 0.1, 64, 128);
        INDArray x = gaussian(DataType.FLOAT, 2, 1.0, 5, 128);

        // docs/many-adapters.md: serve
        LoraLinear layer = LoraLinear.wrap(w, null, LoraConfig.builder().rank(8).build());   // W [64, 128]
        layer.addAdapter("tenant-a", LoraConfig.builder().rank(4).alpha(8).seed(1).build());
        layer.addAdapter("tenant-b", LoraConfig.builder().rank(64).alpha(16).seed(2).build());
        layer.eval();
        String[] perRow = {"tenant-a", "tenant-b", null, "tenant-a", LoraLinear.BASE_MODEL};
        INDArray y = layer.forward(x, perRow);   // [5, 64]: row i through its own adapter, null / __base__: W only
        // end

        assertEquals(5, y.rows());
        for (int i = 0; i < perRow.length; i++) {
            if (perRow[i] == null || perRow[i].equals(LoraLinear.BASE_MODEL)) {
                layer.disableAdapters();
            } else {
                layer.setActiveAdapter(perRow[i]);
            }
            INDArray single = layer.forward(x.getRow(i).reshape(1, 128));
            layer.enableAdapters();
            assertTrue(TestData.normwiseRelativeError(y.getRow(i), single.reshape(64)) < 1e-5, "row " + i);
        }
    }

    @Test
    void theTrainingSnippetRuns() {
        INDArray w = gaussian(DataType.FLOAT, 3, 0.1, 64, 128);
        INDArray x = gaussian(DataType.FLOAT, 4, 1.0, 6, 128);
        INDArray target = gaussian(DataType.FLOAT, 5, 1.0, 6, 64);
        LoraLinear layer = LoraLinear.wrap(w, null, LoraConfig.builder().rank(8).build());
        layer.addAdapter("tenant-a", LoraConfig.builder().rank(8).seed(1).build());
        layer.addAdapter("tenant-b", LoraConfig.builder().rank(16).seed(2).build());
        INDArray aBefore = layer.adapter("default").a().dup();

        // docs/many-adapters.md: train
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(1e-3)).build(layer);
        layer.train();
        String[] perRow = {"tenant-a", "tenant-b", "tenant-a", "tenant-b", "tenant-b", null};
        INDArray y = layer.forward(x, perRow);
        layer.backward(y.sub(target), false);          // each adapter's gradients from its own rows only
        List<String> stepped = layer.adaptersWithGradients();   // [tenant-a, tenant-b]
        trainer.step();                                // steps tenant-a and tenant-b, each at its own step count
        // end

        assertEquals(List.of("tenant-a", "tenant-b"), stepped);
        assertTrue(!layer.adaptersWithGradients().contains("tenant-a")
                && !layer.adaptersWithGradients().contains("tenant-b"), "a step clears the gradients it applied");
        TestData.assertBitwiseEquals(aBefore, layer.adapter("default").a(), "the adapter without rows is not stepped");
    }

    /** Every region above appears verbatim (indentation removed) as a {@code ```java} block of the guide. */
    @Test
    void theGuideShowsEachRegionVerbatim() throws IOException {
        Path root = Path.of(System.getProperty("basedir", System.getProperty("user.dir"))).toAbsolutePath();
        while (root != null && !Files.isDirectory(root.resolve("docs"))) {
            root = root.getParent();
        }
        assertTrue(root != null, "no docs/ above the working directory");
        String guide = Files.readString(root.resolve("docs/many-adapters.md"), StandardCharsets.UTF_8);
        List<String> source = Files.readAllLines(
                root.resolve("lora-core/src/test/java/io/github/lora4j/ManyAdaptersGuideTest.java"),
                StandardCharsets.UTF_8);
        Map<String, String> regions = new LinkedHashMap<>();
        String name = null;
        List<String> lines = new ArrayList<>();
        for (String line : source) {
            String t = line.strip();
            if (t.startsWith("// docs/many-adapters.md: ")) {
                name = t.substring("// docs/many-adapters.md: ".length());
                lines = new ArrayList<>();
            } else if (name != null && t.equals("// end")) {
                regions.put(name, dedent(lines));
                name = null;
            } else if (name != null) {
                lines.add(line);
            }
        }
        assertEquals(List.of("serve", "train"), new ArrayList<>(regions.keySet()), "regions of this test");
        for (Map.Entry<String, String> e : regions.entrySet()) {
            assertTrue(guide.contains("```java\n" + e.getValue() + "\n```"),
                    "docs/many-adapters.md shows region '" + e.getKey() + "' verbatim:\n" + e.getValue());
        }
    }

    private static String dedent(List<String> lines) {
        int indent = lines.stream().filter(l -> !l.isBlank())
                .mapToInt(l -> l.length() - l.stripLeading().length()).min().orElse(0);
        List<String> out = new ArrayList<>();
        for (String l : lines) {
            out.add(l.isBlank() ? "" : l.substring(indent).stripTrailing());
        }
        return String.join("\n", out);
    }
}
