include $(sort $(wildcard $(BR2_EXTERNAL_MXRACK_PATH)/package/*/*.mk))
