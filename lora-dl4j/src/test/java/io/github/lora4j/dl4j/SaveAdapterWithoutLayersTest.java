package io.github.lora4j.dl4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;

/**
 * {@link LoraDl4j#saveAdapter} writes through {@link io.github.lora4j.io.AdapterTensors}, without the lora-core
 * layer it once built over each W: the files are byte for byte those of that path (given the same provenance), for
 * FLOAT and DOUBLE networks, LoRA and DoRA, and the provenance is now the layers' own init.
 */
class SaveAdapterWithoutLayersTest {

    @TempDir
    Path tmp;

    @ParameterizedTest
    @CsvSource({"FLOAT, false", "DOUBLE, false", "FLOAT, true", "DOUBLE, true"})
    void savedFilesAreTheThrowawayLayerPathsByteForByte(DataType type, boolean dora) throws IOException {
        LoraConfig config = LoraConfig.builder().rank(2).alpha(5).init(LoraInit.GAUSSIAN).useDora(dora).seed(9).build();
        MultiLayerNetwork lora = LoraDl4j.apply(Nets.mln(type, new Adam(0.01), 4), config, "layer0", "layer2");
        DataSet data = Nets.task(type, 5, 6, 32);
        lora.fit(data);                                                     // B and m away from their initial values
        LoraDl4j.saveAdapter(lora, tmp.resolve("new"));

        // The old path: a lora-core layer over each W holding a copy of the adapter, saved as layers.
        Map<String, LoraLinear> layers = new LinkedHashMap<>();
        LoraConfig first = null;
        for (String name : List.of("layer0", "layer2")) {
            LoraLayer layer = (LoraLayer) lora.getLayer(name);
            LoraConfig c = layer.loraConf().loraConfig();
            first = first == null ? c : first;
            layers.put(name, LoraOps.coreLayer(layer.paramTable(), c));
        }
        PeftAdapterFiles.saver().linears(layers).fileType(type).provenance(first)
                .save(tmp.resolve("old"), LoraLinear.DEFAULT_ADAPTER);

        for (String file : List.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE)) {
            assertArrayEquals(Files.readAllBytes(tmp.resolve("old").resolve(file)),
                    Files.readAllBytes(tmp.resolve("new").resolve(file)), file);
        }
        PeftAdapter read = PeftAdapterFiles.read(tmp.resolve("new"));
        assertEquals("GAUSSIAN", read.metadata().get("lora4j.init"), "the layers' own init, not a stand-in's ZERO");
        if (dora) {
            INDArray m = lora.getLayer("layer2").paramTable().get(LoraParamInitializer.MAGNITUDE_KEY);
            assertArrayEquals(m.castTo(DataType.DOUBLE).toDoubleVector(),
                    read.magnitude("layer2").castTo(DataType.DOUBLE).toDoubleVector(), "DoRA magnitude");
        }
    }
}
