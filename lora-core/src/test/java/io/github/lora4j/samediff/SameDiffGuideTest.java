package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.samediff.Graphs.Kind;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;

/**
 * The Java blocks of docs/samediff.md, run: each region between {@code // docs/samediff.md: <name>} and
 * {@code // end} is shown by the guide as it is here (lora-examples' {@code DocSnippetsTest} checks that).
 */
class SameDiffGuideTest {

    @org.junit.jupiter.api.io.TempDir
    Path dir;

    @Test
    void dropoutInAGraph() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 3);
        DataSet data = new DataSet(gaussian(DataType.DOUBLE, 1, 1, 8, Graphs.IN),
                gaussian(DataType.DOUBLE, 2, 1, 8, Graphs.OUT));
        Map<String, INDArray> feed = Map.of("x", data.getFeatures());
        // docs/samediff.md: dropout
        LoraConfig cfg = LoraConfig.builder().rank(4).alpha(8).dropout(0.1).build();
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, cfg, "fc0", "fc1");   // adds a listener: sd.addListeners only
        sd.fit(data);                                       // fc1's LoRA path reads fc1/lora_dropped = x ⊙ m/(1-p)
        INDArray y = sd.output(feed, "fc1").get("fc1");     // outside training: no dropout, bit for bit
        // end
        assertEquals(2, lora.adapted().size());
        assertTrue(y.amaxNumber().doubleValue() > 0);
    }

    @Test
    void sameDiff() throws IOException {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 3);
        INDArray w0 = sd.getArrForVarName("fc0/weight").dup();
        DataSet data = new DataSet(gaussian(DataType.DOUBLE, 50, 1, 8, Graphs.IN),
                gaussian(DataType.DOUBLE, 51, 1, 8, Graphs.OUT));
        // docs/samediff.md: apply
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, LoraConfig.builder().rank(4).alpha(8).build(), "fc0", "fc1");
        sd.fit(data);                            // trains fc0/lora_A, fc0/lora_B, ... only; every W stays bitwise as it was
        lora.save(dir);                          // PEFT files, modules "fc0", "fc1" (from "fc0/weight", "fc1/weight")
        lora.merge();  lora.unmerge();           // W += s·B·A in place, and back bit for bit
        SameDiff plain = lora.mergeAndUnload();  // the original ops and variables, merged weights, no LoRA ops
        // end
        assertNotNull(plain);
        assertEquals(List.of("fc0", "fc1"), List.copyOf(io.github.lora4j.io.PeftAdapterFiles.read(dir).modules()));
        assertTrue(!plain.hasVariable("fc0/lora_A"), "no LoRA variable left");
        assertTrue(w0.equalShapes(plain.getArrForVarName("fc0/weight")));
    }
}
