package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.samediff.LoraSameDiffApplyTest.CFG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.samediff.Graphs.Kind;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * DoRA is refused by name on the SameDiff path (apply, linear and load), leaving the graph as it was: the graph carries
 * A and B only, and taking a DoRA config or file as plain LoRA would silently compute another model.
 */
class LoraSameDiffDoraTest {

    private static final LoraConfig DORA = CFG.toBuilder().useDora(true).build();

    @TempDir
    Path tmp;

    private static void refusedUnchanged(SameDiff sd, Runnable call) {
        Graphs.Snapshot before = Graphs.snapshot(sd);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().contains("DoRA") && e.getMessage().contains("SameDiff"), e.getMessage());
        assertEquals(before, Graphs.snapshot(sd), "the graph changed although DoRA was refused");
    }

    @Test
    void applyAndLinearRefuseADoraConfig() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 1);
        refusedUnchanged(sd, () -> LoraSameDiff.apply(sd, DORA, "fc0"));
        refusedUnchanged(sd, () -> LoraSameDiff.builder(DORA).targets("fc0", "fc1").apply(sd));
        SameDiff fresh = SameDiff.create();
        SDVariable x = fresh.placeHolder("x", DataType.DOUBLE, -1, 4);
        refusedUnchanged(fresh, () -> LoraSameDiff.linear(fresh, "q", x, gaussian(DataType.DOUBLE, 2, 1, 3, 4), null,
                DORA));
    }

    @Test
    void loadRefusesADoraFileAndLoadsNothing() throws IOException {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 3);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, "fc0");
        LoraSameDiff fc0 = lora.adapter("fc0/weight");
        Map<String, LoraLinear> modules = new LinkedHashMap<>();
        LoraLinear dora = LoraLinear.wrap(fc0.toLoraLinear().weight(), null, DORA, fc0.layout());
        modules.put(fc0.name(), dora);
        PeftAdapterFiles.save(tmp.resolve("dora"), modules, LoraLinear.DEFAULT_ADAPTER, DataType.DOUBLE);
        INDArray a = fc0.currentA();
        refusedUnchanged(sd, () -> {
            try {
                lora.load(tmp.resolve("dora"));
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        });
        assertEquals(a, fc0.currentA());
    }
}
