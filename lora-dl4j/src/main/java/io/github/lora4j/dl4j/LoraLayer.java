package io.github.lora4j.dl4j;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/** A LoRA layer of a network ({@link LoraDenseLayerImpl}, {@link LoraOutputLayerImpl}), as {@link LoraDl4j} sees it. */
interface LoraLayer {

    /**
     * The layer's arithmetic and merge state.
     *
     * @return the layer's own ops, not a copy
     */
    LoraOps ops();

    /**
     * The layer's configuration.
     *
     * @return the LoRA configuration the layer was built from
     */
    LoraLayerConf loraConf();

    /**
     * The layer's parameters by key ({@link LoraParamInitializer#WEIGHT_KEY} and the others).
     *
     * @return live views ({@code W}, {@code b}, {@code loraA}, {@code loraB}) into the network's flat parameter
     *         vector, not copies
     */
    Map<String, INDArray> paramTable();

    /**
     * Name and index, for messages.
     *
     * @return DL4J's layer id: the layer's name, index and type
     */
    String describe();
}
