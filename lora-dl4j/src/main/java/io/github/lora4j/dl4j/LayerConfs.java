package io.github.lora4j.dl4j;

import io.github.lora4j.LoraConfig;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.memory.LayerMemoryReport;
import org.deeplearning4j.nn.conf.memory.MemoryReport;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.learning.regularization.Regularization;

/**
 * What the LoRA layer configurations ({@link LoraDenseLayer}, {@link LoraOutputLayer}, {@link LoraRnnOutputLayer})
 * share: copying the base layer, freezing, wiring. Each of the three overrides DL4J's methods with one line calling here;
 * they cannot share a superclass, as each extends its base layer's DL4J class.
 */
final class LayerConfs {

    private LayerConfs() {
    }

    /** Copies what DL4J reads from a feed-forward layer configuration; W and b get no updater state (NoOp). */
    static void copyFeedForward(FeedForwardLayer from, FeedForwardLayer to) {
        to.setLayerName(from.getLayerName());
        to.setIDropout(from.getIDropout() == null ? null : from.getIDropout().clone());
        to.setActivationFn(from.getActivationFn());
        to.setWeightInitFn(from.getWeightInitFn());
        to.setBiasInit(from.getBiasInit());
        to.setGainInit(from.getGainInit());
        to.setRegularization(from.getRegularization());
        to.setRegularizationBias(Collections.emptyList());
        to.setIUpdater(from.getIUpdater());
        to.setBiasUpdater(new NoOp());
        to.setGradientNormalization(from.getGradientNormalization());
        to.setGradientNormalizationThreshold(from.getGradientNormalizationThreshold());
        to.setNIn(from.getNIn());
        to.setNOut(from.getNOut());
        to.setTimeDistributedFormat(from.getTimeDistributedFormat());
    }

    /** Frozen W and b: NoOp, so the updater holds no state for them (their gradient is never written: 0). */
    static IUpdater updaterByParam(FeedForwardLayer conf, String param) {
        return LoraParamInitializer.isFrozen(param) ? new NoOp() : conf.getIUpdater();
    }

    /** No regularization of frozen W and b; loraA and loraB take the base layer's weight regularization. */
    static List<Regularization> regularizationByParam(FeedForwardLayer conf, String param) {
        if (LoraParamInitializer.isFrozen(param) || conf.getRegularization() == null) {
            return Collections.emptyList();
        }
        return conf.getRegularization();
    }

    /**
     * Refuses adapter settings a layer cannot compute with, when a network is built, from {@link LoraDl4j#apply} or
     * from a file ({@code ModelSerializer}, JSON) that may have been edited: a rank below 1 (any higher rank is accepted, as in PEFT),
     * an alpha that is not finite and positive, or a scaling {@code s} that is not a finite value of the network's
     * data type (an alpha of 1e39 in a FLOAT network gave {@code s = ∞}, so NaN outputs even with {@code B = 0}).
     */
    static void checkSettings(LoraLayerConf conf, int layerIndex, DataType networkDataType) {
        if (conf.lora() == null) {
            return;
        }
        String layer = "LoRA layer '" + ((Layer) conf).getLayerName() + "' (index " + layerIndex + ")";
        try {
            LoraConfig config = conf.lora().toConfig();   // refuses a rank below 1
            config.scaling(1.0, networkDataType);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(layer + ": its settings " + conf.lora() + " cannot compute in a "
                    + networkDataType + " network: " + e.getMessage(), e);
        }
    }

    /** DL4J's usual instantiate: listeners, index, parameter views. */
    static <L extends org.deeplearning4j.nn.api.Layer> L wire(L layer, NeuralNetConfiguration conf,
            Collection<TrainingListener> listeners, int index, INDArray paramsView, boolean initializeParams) {
        layer.setListeners(listeners);
        layer.setIndex(index);
        layer.setParamsViewArray(paramsView);
        Map<String, INDArray> params = LoraParamInitializer.getInstance().init(conf, paramsView, initializeParams);
        layer.setParamTable(params);
        layer.setConf(conf);
        return layer;
    }

    /** A dense layer's memory: parameters and updater state of loraA/loraB, activations of the output size. */
    static LayerMemoryReport memoryReport(FeedForwardLayer conf, InputType inputType) {
        InputType outputType = conf.getOutputType(-1, inputType);
        long numParams = LoraParamInitializer.getInstance().numParams(conf);
        long trainable = LoraParamInitializer.trainableParams(conf);
        long updaterState = conf.getIUpdater() == null ? 0 : conf.getIUpdater().stateSize(trainable);
        return new LayerMemoryReport.Builder(conf.getLayerName(), conf.getClass(), inputType, outputType)
                .standardMemory(numParams, updaterState)
                .workingMemory(0, 0, 0, outputType.arrayElementsPerExample())
                .cacheMemory(MemoryReport.CACHE_MODE_ALL_ZEROS, MemoryReport.CACHE_MODE_ALL_ZEROS)
                .build();
    }
}
