package io.github.lora4j.io;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.io.IoTestData.Q;
import static io.github.lora4j.io.IoTestData.V;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.github.lora4j.LoraLinear;
import java.io.IOException;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * {@link PeftAdapterFiles.Saver} copies what it is handed: a caller changing its maps or full-tensor arrays after
 * handing them over does not change what is saved.
 */
class SaverCopiesItsInputsTest {

    @TempDir
    Path tmp;

    @Test
    void changingTheModuleMapAfterHandingItOverChangesNothingSaved() throws IOException {
        Map<String, LoraLinear> model = IoTestData.model(DataType.FLOAT, 7);
        Map<String, LoraLinear> handed = new HashMap<>(Map.of(Q, model.get(Q)));
        PeftAdapterFiles.Saver saver = PeftAdapterFiles.saver().linears(handed);
        handed.put(V, model.get(V));
        handed.remove(Q);
        saver.save(tmp, "default");
        assertEquals(List.of(Q), PeftAdapterFiles.read(tmp).modules(), "the modules as handed over");
    }

    @Test
    void changingFullTensorsOrTheirMapsAfterHandingThemOverChangesNothingSaved() throws IOException {
        INDArray weight = gaussian(DataType.FLOAT, 11, 1, 3, 8);
        INDArray original = weight.dup();
        Map<String, INDArray> params = new HashMap<>(Map.of("weight", weight));
        Map<String, Map<String, INDArray>> tensors = new HashMap<>(Map.of("score", params));
        PeftAdapterFiles.Saver saver = PeftAdapterFiles.saver().linears(IoTestData.model(DataType.FLOAT, 7))
                .modulesToSave(tensors);
        weight.assign(42);                                        // the caller reuses its array
        params.put("bias", gaussian(DataType.FLOAT, 12, 1, 3));
        tensors.put("head", Map.of("weight", gaussian(DataType.FLOAT, 13, 1, 2, 8)));
        saver.save(tmp, "default");

        PeftAdapter read = PeftAdapterFiles.read(tmp);
        assertEquals(List.of("score"), read.fullModules());
        assertEquals(List.of("weight"), List.copyOf(read.full("score").keySet()));
        assertBitwiseEquals(original, read.full("score").get("weight"), "the values as handed over");
        assertEquals(List.of("score"), read.config().modulesToSave());
    }

    @Test
    void aNullModulePathIsRefusedByNameNotByATreeMapNpe() {
        Map<String, LoraLinear> model = new HashMap<>(IoTestData.model(DataType.FLOAT, 7));
        model.put(null, model.get(Q));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PeftAdapterFiles.saver().linears(model).save(tmp, "default"));
        assertEquals("module paths must not be blank, got 'null'", e.getMessage());
    }

    @Test
    void aNullFullTensorParameterIsRefusedNamingTheParametersThereAre() throws IOException {
        PeftAdapterFiles.saver().linears(IoTestData.model(DataType.FLOAT, 7))
                .modulesToSave(Map.of("score", Map.of("weight", gaussian(DataType.FLOAT, 11, 1, 3, 8)))).save(tmp, "default");
        PeftAdapter read = PeftAdapterFiles.read(tmp);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> read.full("score", null, DataType.FLOAT));
        assertEquals("module 'score' has no full tensor 'null'; expected one of [weight]", e.getMessage());
    }
}
