package io.github.lora4j.dl4j;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/** A LoRA layer of a network ({@link LoraDenseLayerImpl}, {@link LoraOutputLayerImpl}), as {@link LoraDl4j} sees it. */
interface LoraLayer {

    /** The layer's arithmetic and merge state. */
    LoraOps ops();

    /** The layer's configuration. */
    LoraLayerConf loraConf();

    /** Live parameter views ({@code W}, {@code b}, {@code loraA}, {@code loraB}) into the network's flat vector. */
    Map<String, INDArray> paramTable();

    /** Name and index, for messages. */
    String describe();
}
