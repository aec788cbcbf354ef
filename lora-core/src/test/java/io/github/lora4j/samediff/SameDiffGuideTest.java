package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.samediff.Graphs.Kind;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;

/**
 * The Java block of docs/samediff.md, run: the region between {@code // docs/samediff.md} and {@code // end} is the
 * guide's block, and the guide must show it as it is here.
 */
class SameDiffGuideTest {

    @Test
    void dropoutInAGraph() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 3);
        DataSet data = new DataSet(gaussian(DataType.DOUBLE, 1, 1, 8, Graphs.IN),
                gaussian(DataType.DOUBLE, 2, 1, 8, Graphs.OUT));
        Map<String, INDArray> feed = Map.of("x", data.getFeatures());
        // docs/samediff.md
        LoraConfig cfg = LoraConfig.builder().rank(4).alpha(8).dropout(0.1).build();
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, cfg, "fc0", "fc1");   // adds a listener: sd.addListeners only
        sd.fit(data);                                       // fc1's LoRA path reads fc1/lora_dropped = x ⊙ m/(1-p)
        INDArray y = sd.output(feed, "fc1").get("fc1");     // outside training: no dropout, bit for bit
        // end
        assertEquals(2, lora.adapted().size());
        assertTrue(y.amaxNumber().doubleValue() > 0);
    }

    @Test
    void theGuidesJavaBlockIsTheRegionOfThisFile() throws IOException {
        List<String> lines = Files.readAllLines(
                Path.of("src", "test", "java", "io", "github", "lora4j", "samediff", "SameDiffGuideTest.java"));
        List<String> region = new ArrayList<>();
        boolean in = false;
        for (String l : lines) {
            if (l.trim().equals("// docs/samediff.md")) {
                in = true;
            } else if (in && l.trim().equals("// end")) {
                break;
            } else if (in) {
                region.add(l.substring(8));
            }
        }
        List<String> block = new ArrayList<>();
        in = false;
        for (String l : Files.readAllLines(Path.of("..", "docs", "samediff.md"))) {
            if (l.equals("```java")) {
                in = true;
            } else if (in && l.equals("```")) {
                break;
            } else if (in) {
                block.add(l);
            }
        }
        assertEquals(region, block, "docs/samediff.md's Java block must be the region of SameDiffGuideTest");
    }
}
